# bookmux: `make run` (live exchanges) or `make demo` (local simulator), `make test`.
# Options as in the original: SYMBOLS=BTC/USDT,ETH/USDT LEVELS=10 PORT=50052 (CONFIG=, ARGS=).

PY        ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
CONFIG    ?= deploy/bookmux.toml
DEMO_CONFIG ?= deploy/demo.toml
SYMBOLS   ?=
LEVELS    ?=
PORT      ?=
ENDPOINT  ?= tcp://127.0.0.1:$(or $(PORT),50052)
SYMBOL    ?= $(firstword $(subst $(comma), ,$(or $(SYMBOLS),BTC/USDT)))
comma     := ,
# The symbols `make watch` walks through: the demo's while the demo runs, else CONFIG's.
WATCH_CONFIG ?= $(if $(wildcard run/demo/supervisor.sock),$(DEMO_CONFIG),$(CONFIG))

OPTS = $(if $(SYMBOLS),--symbols $(SYMBOLS)) $(if $(LEVELS),--levels $(LEVELS)) $(if $(PORT),--port $(PORT))

.PHONY: help venv deps run demo watch watch-capture deplete stop status test lint typecheck clean bench bench-quick bench-deps keys

help:
	@echo "make run      set up and run everything under supervisord against the live exchanges (Ctrl-C stops)"
	@echo "make demo     the same against the local exchange simulator"
	@echo "make watch    the live merged book full screen (SYMBOL=BTC/USDT, PORT=50052) from another terminal"
	@echo "              (keys: q quit, Tab/n next symbol, p previous, 1-9 pick, +/- levels; ARGS=--plain: text)"
	@echo "make watch-capture   with make demo running: regenerate docs/watch.svg and docs/watch.txt"
	@echo "make deplete ARGS=\"BTC/USDT sell 15\"   cost of an order across venues"
	@echo "make status / make stop   supervisord status / stop everything"
	@echo "make test     set up, lint, run the test suite      make lint   ruff + mypy"
	@echo "make keys     CURVE key pairs under keys/ (then [security] curve = true)"

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	@# the gRPC stubs, generated from services/gateway_grpc/protos at install time (never committed)
	$(VPY) -m services.gateway_grpc.stubs
	@touch $(STAMP)

venv: $(STAMP)

# System tools the tests need beyond the venv: tmux (the terminal view's test). Installed with
# apt-get when missing and we are root (CI, this project's machines); otherwise say how.
deps:
	@command -v tmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing tmux (tests/test_tui_tmux.py drives the terminal view in it)"; \
	    apt-get install -y -qq tmux >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq tmux; }; \
	  else echo "tmux is missing: install it (e.g. sudo apt-get install tmux) for tests/test_tui_tmux.py" >&2; fi; }
	@command -v ip >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing iproute2 (tests/test_cluster_netns.py builds hosts as network namespaces)"; \
	    apt-get install -y -qq iproute2 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq iproute2; }; \
	  else echo "iproute2 (ip) is missing: install it as root for tests/test_cluster_netns.py" >&2; fi; }

run: $(STAMP)
	@conf=$$($(VPY) -m deploy.supervisor --config $(CONFIG) $(OPTS)) && \
	  echo "supervisord: $$conf (logs beside it in logs/); subscribers: $(ENDPOINT); Ctrl-C stops" && \
	  exec $(VENV)/bin/supervisord -n -c $$conf

demo: $(STAMP)
	@conf=$$($(VPY) -m deploy.supervisor --config $(DEMO_CONFIG) --demo $(OPTS)) && \
	  echo "supervisord: $$conf (logs beside it in logs/); subscribers: $(ENDPOINT); Ctrl-C stops" && \
	  exec $(VENV)/bin/supervisord -n -c $$conf

watch: $(STAMP)
	$(VPY) -m services.client watch $(SYMBOL) --endpoint $(ENDPOINT) --config $(WATCH_CONFIG) $(ARGS)

watch-capture: $(STAMP)
	$(VPY) -m services.client.tui.capture $(SYMBOL) --endpoint $(ENDPOINT) --config $(WATCH_CONFIG) --out docs/watch

deplete: $(STAMP)
	$(VPY) -m services.client deplete $(ARGS)

status: $(STAMP)
	@for c in run/supervisord.conf run/demo/supervisord.conf; do \
	  test -S $$(dirname $$c)/supervisor.sock && $(VENV)/bin/supervisorctl -c $$c status; done; true

stop: $(STAMP)
	@for c in run/supervisord.conf run/demo/supervisord.conf; do \
	  test -S $$(dirname $$c)/supervisor.sock && $(VENV)/bin/supervisorctl -c $$c shutdown; done; true

keys: $(STAMP)
	$(VPY) -m common.security --dir keys

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy common services deploy

test: $(STAMP) deps
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q

# The benchmark's own extra (cryptofeed, the peer it compares against; py-spy), installed once.
bench-deps: $(STAMP)
	@$(VPY) -c "import cryptofeed" 2>/dev/null || $(VPY) -m pip install -q -e '.[bench]'

bench: bench-deps
	$(VPY) -m bench.run --full $(ARGS)

bench-quick: bench-deps
	$(VPY) -m bench.run --quick $(ARGS)

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache .ruff_cache .hypothesis
