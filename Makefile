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

OPTS = $(if $(SYMBOLS),--symbols $(SYMBOLS)) $(if $(LEVELS),--levels $(LEVELS)) $(if $(PORT),--port $(PORT))

.PHONY: help venv run demo watch deplete stop status test lint typecheck clean bench bench-quick keys netns-tools

help:
	@echo "make run      set up and run everything under supervisord against the live exchanges (Ctrl-C stops)"
	@echo "make demo     the same against the local exchange simulator"
	@echo "make watch    print the live merged book (SYMBOL=BTC/USDT, PORT=50052) from another terminal"
	@echo "make deplete ARGS=\"BTC/USDT sell 15\"   cost of an order across venues"
	@echo "make status / make stop   supervisord status / stop everything"
	@echo "make test     set up, lint, run the test suite      make lint   ruff + mypy"
	@echo "make keys     CURVE key pairs under keys/ (then [security] curve = true)"

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@conf=$$($(VPY) -m deploy.supervisor --config $(CONFIG) $(OPTS)) && \
	  echo "supervisord: $$conf (logs beside it in logs/); subscribers: $(ENDPOINT); Ctrl-C stops" && \
	  exec $(VENV)/bin/supervisord -n -c $$conf

demo: $(STAMP)
	@conf=$$($(VPY) -m deploy.supervisor --config $(DEMO_CONFIG) --demo $(OPTS)) && \
	  echo "supervisord: $$conf (logs beside it in logs/); subscribers: $(ENDPOINT); Ctrl-C stops" && \
	  exec $(VENV)/bin/supervisord -n -c $$conf

watch: $(STAMP)
	$(VPY) -m services.client watch $(SYMBOL) --endpoint $(ENDPOINT)

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

test: $(STAMP) netns-tools
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q

# The namespace test (tests/test_cluster_netns.py) needs `ip` (iproute2): installed here only when
# missing and running as root (as CI does); otherwise the test says why it skips (fails under CI=true).
netns-tools:
	@command -v ip >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing iproute2 for the namespace test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 \
	      || echo "could not install iproute2: the namespace test will skip (fail under CI=true)"; \
	  else echo "note: no \`ip\` command (iproute2) and not root: the namespace test will skip"; fi; }

bench: $(STAMP)
	$(VPY) -m bench.run --full

bench-quick: $(STAMP)
	$(VPY) -m bench.run --quick

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache .ruff_cache .hypothesis
