"""Metrics and health (common/metrics.py and each service's metrics module): the shared pieces on
their own, then every service's endpoint over a real pipeline against the simulator (simulator ->
two feeds -> aggregator -> publisher -> gRPC gateway): endpoints answer, counters move while data
flows, and the aggregator's ``/readyz`` and venue status follow a feed killed with ``kill -9`` and
restarted. Times are printed (``-s``), never asserted."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from common import config, metrics
from common.metrics import Health, LatencyHistogram, MetricsError, MetricsServer
from tests.harness import REPO, Procs, SimControl, Subscriber, free_port, wait_until, write_config

SYMS = ["BTC/USDT", "ETH/USDT"]
REPORT: list[str] = []


# --- HTTP and exposition helpers ---------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:port/path``; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` as {(name, sorted labels): value}."""
    status, text = get(port, "/metrics")
    assert status == 200, f"/metrics on {port}: HTTP {status}"
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sample ``name{labels}``; KeyError naming it when absent."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise KeyError(f"{name}{labels} not exported; have {sorted(k for k in samples if k[0] == name)[:10]}")
    return samples[key]


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of every sample ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lv), v in samples.items() if n == name and want <= set(lv))


# --- the shared pieces ---------------------------------------------------------------------------------


def test_parse_address() -> None:
    """host:port (IPv6 in brackets, port 0 = any); anything else is an error naming the value."""
    assert metrics.parse_address("127.0.0.1:50100") == ("127.0.0.1", 50100)
    assert metrics.parse_address("[::1]:9") == ("::1", 9)
    assert metrics.parse_address("localhost:0") == ("localhost", 0)
    for bad in ("127.0.0.1", ":80", "host:port", "127.0.0.1:70000", ""):
        with pytest.raises(MetricsError, match="host:port"):
            metrics.parse_address(bad)


def test_latency_histogram_cumulative_buckets() -> None:
    """Observations land in the first bucket whose bound is >= the value; buckets are cumulative."""
    h = LatencyHistogram([0.001, 0.01, 0.1])
    for v in (0.0005, 0.001, 0.002, 0.05, 3.0):
        h.observe(v)
    assert h.buckets() == [("0.001", 2.0), ("0.01", 3.0), ("0.1", 4.0), ("+Inf", 5.0)]
    assert h.count == 5
    assert h.sum == pytest.approx(3.0535)


def test_health_stall_and_readiness() -> None:
    """Alive while ticked within stall_after; not alive -> not ready; a reason -> not ready, with it."""
    now = [100.0]
    why: list[str | None] = [None]
    h = Health("svc", ready=lambda: (why[0], {"extra": 1}), stall_after=5.0, clock=lambda: now[0])
    assert h.alive()[0] is True
    assert h.ready() == (True, {"service": "svc", "ready": True, "extra": 1})
    why[0] = "binance BTC/USDT syncing"
    ok, body = h.ready()
    assert (ok, body["reason"], body["extra"]) == (False, "binance BTC/USDT syncing", 1)
    why[0] = None
    now[0] = 105.5
    ok, body = h.alive()
    assert ok is False and body["reason"] == "main loop has not ticked for 5.5 s (stall_after 5 s)"
    ok, body = h.ready()
    assert ok is False and body["reason"].startswith("not alive: main loop has not ticked")
    h.tick()
    assert h.alive()[0] is True and h.ready()[0] is True


def test_server_endpoints() -> None:
    """/metrics serves the collectors at scrape time; /healthz and /readyz answer JSON, 200 or 503; 404 else."""
    state = {"n": 1, "why": "not yet"}

    def families() -> Iterator[Any]:
        yield metrics.counter("bookmux_test_things", "things", ["kind"], [(["a"], state["n"])])

    health = Health("test", ready=lambda: (state["why"], {}))
    port = free_port()
    server = metrics.serve(f"127.0.0.1:{port}", [metrics.FunctionCollector(families)], health)
    assert isinstance(server, MetricsServer)
    try:
        assert value(scrape(port), "bookmux_test_things_total", kind="a") == 1.0
        state["n"] = 7
        assert value(scrape(port), "bookmux_test_things_total", kind="a") == 7.0
        status, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True
        status, body = get(port, "/readyz")
        assert status == 503 and json.loads(body) == {"service": "test", "ready": False, "reason": "not yet"}
        state["why"] = None
        status, body = get(port, "/readyz")
        assert status == 200 and json.loads(body) == {"service": "test", "ready": True}
        assert get(port, "/nothing")[0] == 404
        with pytest.raises(MetricsError, match=f"127.0.0.1:{port}"):
            metrics.serve(f"127.0.0.1:{port}", [], Health("again"))
    finally:
        server.close()
    assert get(port, "/healthz")[0] == 0
    assert metrics.serve(None, [], Health("none")) is None


def test_publisher_counts_open_subscriptions(tmp_path: Path) -> None:
    """Every subscribe and unsubscribe the XPUB reports moves the open count of its topic; foreign
    topics are one label; readiness waits for the aggregator."""
    from services.publisher import metrics as pub_metrics
    from services.publisher.service import Publisher

    cfg_path = tmp_path / "bookmux.toml"
    write_config(cfg_path, symbols=SYMS, venues={"alpha": {}})
    cfg = config.load(cfg_path)
    ctx = zmq.Context()
    p = Publisher(cfg, levels=5, ctx=ctx)
    try:
        for frame in (b"\x01book.BTC/USDT", b"\x01book.BTC/USDT", b"\x01book.ETH/USDT", b"\x00book.BTC/USDT",
                      b"\x01", b"\x01nonsense", b"\x00book.ETH/USDT", b"\x00book.ETH/USDT"):
            p.on_subscription(frame)
        assert p.subscriptions == {b"book.BTC/USDT": 1, b"": 1, b"nonsense": 1}
        fams = {f.name: f for f in pub_metrics.collect(p, set(SYMS))}
        subs = {s.labels["symbol"]: s.value for s in fams["bookmux_publisher_subscriptions"].samples}
        assert subs == {"BTC/USDT": 1.0, "ETH/USDT": 0.0, "*": 1.0, "other": 1.0}
        up = cfg.aggregator.pub
        assert pub_metrics.readiness(p)[0] == f"nothing received from the aggregator yet ({up})"
        p._upstream_heard(0)           # the first book from the aggregator
        assert pub_metrics.readiness(p)[0] is None
        p._fresh.discard(0)            # what a reported loss of that connection does
        assert pub_metrics.readiness(p)[0] == f"connection to the aggregator lost; nothing received since ({up})"
        p._upstream_heard(0)
        assert pub_metrics.readiness(p)[0] is None
    finally:
        p.sub_watch.close()
        for s in (p.sub, p.out, p.ctl):
            s.close(0)
        ctx.term()


def test_feed_readiness_counts_listed_symbols_only(tmp_path: Path) -> None:
    """A feed is ready when every symbol the venue lists is live; unlisted ones do not count, none
    listed is not ready; the status gauge has one series per status, 1 for the current one."""
    from common.feed import metrics as feed_metrics
    from common.feed.runner import FeedRunner
    from services.feed_binance.spec import SPEC

    cfg_path = tmp_path / "bookmux.toml"
    write_config(cfg_path, symbols=SYMS, venues={"alpha": {"kind": "binance"}})
    r = FeedRunner(SPEC, config.load(cfg_path).venue("alpha"))
    try:
        assert feed_metrics.readiness(r) == ("2 of 2 symbol(s) not live: BTC/USDT, ETH/USDT", {
            "venue": "alpha", "unlisted": [],
            "symbols": {"BTC/USDT": "syncing: starting", "ETH/USDT": "syncing: starting"}})
        btc, eth = r.core.streams["BTC/USDT"], r.core.streams["ETH/USDT"]
        btc.status = "live"
        eth.listed, eth.status = False, "down"
        assert feed_metrics.readiness(r) == (None, {"venue": "alpha", "unlisted": ["ETH/USDT"],
                                                    "symbols": {"BTC/USDT": "live"}})
        fams = {f.name: f for f in feed_metrics.collect(r)}
        status = {(s.labels["symbol"], s.labels["status"]): s.value for s in fams["bookmux_feed_symbol_status"].samples}
        assert status == {("BTC/USDT", "down"): 0.0, ("BTC/USDT", "live"): 1.0, ("BTC/USDT", "stale"): 0.0,
                          ("BTC/USDT", "syncing"): 0.0, ("ETH/USDT", "down"): 1.0, ("ETH/USDT", "live"): 0.0,
                          ("ETH/USDT", "stale"): 0.0, ("ETH/USDT", "syncing"): 0.0}
        r.core.counters.update({"gaps": 2, "checksum_failures": 1, "reconnects_stale": 3, "reconnects_lost": 1})
        fams = {f.name: f for f in feed_metrics.collect(r)}
        resyncs = {s.labels["cause"]: s.value for s in fams["bookmux_feed_resyncs"].samples
                   if s.name.endswith("_total")}
        assert resyncs == {"gap": 2.0, "checksum": 1.0, "crossed": 0.0, "malformed": 0.0, "timeout": 0.0,
                           "reconnect": 4.0}
        btc.listed = False
        assert feed_metrics.readiness(r)[0] == "the venue lists none of the configured symbols"
    finally:
        r.rest.close()


def test_feed_core_stays_free_of_metrics() -> None:
    """The HTTP side lives in the transport: the feed core and its parts import no metrics code."""
    import subprocess
    import sys

    code = ("import sys, common.feed.core, common.feed.handlers, common.feed.stream, common.feed.outbox; "
            "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'wsgiref', 'common.metrics'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.strip() == "[]"


# --- every service over a real pipeline ----------------------------------------------------------------


class Pipeline:
    """Simulator, Binance and Bitstamp feeds, aggregator, publisher and gRPC gateway, each with its
    metrics endpoint on a free port; one plain SUB subscriber of BTC/USDT."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        bin_port, bts_port, self.ctl_port = free_port(), free_port(), free_port()
        extra = (f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {self.ctl_port}\nseed = 5\nrate = 20.0\n\n'
                 f'[simulator.venues.binance]\nkind = "binance"\nport = {bin_port}\n\n'
                 f'[simulator.venues.bitstamp]\nkind = "bitstamp"\nport = {bts_port}\n')
        self.cfg = tmp / "bookmux.toml"
        self.ep = write_config(
            self.cfg, symbols=SYMS, levels=10, down_after=2.0, extra=extra,
            venues={"binance": {"kind": "binance", "ws_url": f"ws://127.0.0.1:{bin_port}",
                                "rest_url": f"http://127.0.0.1:{bin_port}", "stale_after": 3.0},
                    "bitstamp": {"kind": "bitstamp", "ws_url": f"ws://127.0.0.1:{bts_port}",
                                 "rest_url": f"http://127.0.0.1:{bts_port}/api/v2", "stale_after": 3.0}})
        self.ports = {name: free_port() for name in ("feed_binance", "feed_bitstamp", "aggregator", "publisher",
                                                     "gateway_grpc")}
        self.grpc_port = free_port()
        self.sim = SimControl(self.ctl_port)
        self.ctx = zmq.Context()
        self.sub = Subscriber(f"tcp://127.0.0.1:{self.ep['pub_port']}", "BTC/USDT", self.ctx)
        self.procs = Procs(tmp)

    def metrics_set(self, key: str, name: str) -> list[str]:
        return ["--set", f'{key}.metrics="127.0.0.1:{self.ports[name]}"']

    def start_feed(self, venue: str) -> None:
        self.procs.start(f"feed_{venue}", f"services.feed_{venue}", "--venue", venue, "--config", str(self.cfg),
                         *self.metrics_set(f"venues.{venue}", f"feed_{venue}"))

    def start(self) -> None:
        c = str(self.cfg)
        self.procs.start("simulator", "services.simulator", "--config", c)
        wait_until(self.sim.up, timeout=30, what="simulator up")
        self.start_feed("binance")
        self.start_feed("bitstamp")
        self.procs.start("aggregator", "services.aggregator", "--config", c,
                         *self.metrics_set("aggregator", "aggregator"))
        self.procs.start("publisher", "services.publisher", "--config", c, *self.metrics_set("publisher", "publisher"))
        self.procs.start("gateway_grpc", "services.gateway_grpc", "--config", c, "--port", str(self.grpc_port),
                         *self.metrics_set("gateway_grpc", "gateway_grpc"))

    def ready(self, name: str) -> bool:
        self.sub.drain(0)
        return get(self.ports[name], "/readyz")[0] == 200

    def readyz(self, name: str) -> tuple[int, dict[str, Any]]:
        status, body = get(self.ports[name], "/readyz")
        return status, (json.loads(body) if body else {})

    def close(self) -> None:
        self.procs.close()
        self.sub.sock.close(0)
        self.ctx.term()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path_factory.mktemp("metrics"))
    try:
        p.start()
        t0 = time.monotonic()
        for name in p.ports:
            wait_until(lambda name=name: p.ready(name), timeout=90, what=f"{name} /readyz 200")
        REPORT.append(f"every service ready {time.monotonic() - t0:.2f} s after the processes started")
        yield p
    finally:
        p.close()
        print("\n" + "\n".join(REPORT))


@pytest.mark.slow
def test_every_endpoint_answers(pipe: Pipeline) -> None:
    """Every service answers /healthz and /readyz with 200 JSON, and /metrics with its families."""
    expected = {
        "feed_binance": ["bookmux_feed_frames", "bookmux_feed_levels", "bookmux_feed_resyncs",
                         "bookmux_feed_symbol_status", "bookmux_feed_book_levels", "bookmux_feed_drops"],
        "feed_bitstamp": ["bookmux_feed_frames", "bookmux_feed_gaps", "bookmux_feed_checksum_failures"],
        "aggregator": ["bookmux_aggregator_venue_status", "bookmux_aggregator_latency_seconds",
                       "bookmux_aggregator_query_seconds", "bookmux_aggregator_snapshots_published",
                       "bookmux_aggregator_book_levels", "bookmux_aggregator_drops"],
        "publisher": ["bookmux_publisher_subscriptions", "bookmux_publisher_latency_seconds",
                      "bookmux_publisher_snapshots_published"],
        "gateway_grpc": ["bookmux_gateway_books_received", "bookmux_gateway_streams_opened"],
    }
    for name, port in pipe.ports.items():
        status, body = get(port, "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True, (name, body)
        status, body = pipe.readyz(name)
        assert status == 200 and body["ready"] is True, (name, body)
        status, text = get(port, "/metrics")
        names = {f.name for f in text_string_to_metric_families(text)}
        assert status == 200 and "process_cpu_seconds" in names, name
        missing = [f for f in expected[name] if f not in names]
        assert not missing, f"{name} lacks {missing}"
    body = pipe.readyz("aggregator")[1]
    assert body["not_live"] == {} and body["streams"] == 4 and body["feeds_down"] == []


@pytest.mark.slow
def test_counters_move_while_data_flows(pipe: Pipeline) -> None:
    """Frames, levels, messages, published snapshots and latency observations grow; statuses live."""
    watched = {
        "feed_binance": [("bookmux_feed_frames_total", {"venue": "binance"}),
                         ("bookmux_feed_levels_total", {"venue": "binance"}),
                         ("bookmux_feed_deltas_total", {"venue": "binance"})],
        "feed_bitstamp": [("bookmux_feed_frames_total", {"venue": "bitstamp"}),
                          ("bookmux_feed_levels_total", {"venue": "bitstamp"})],
        "aggregator": [("bookmux_aggregator_bus_messages_total", {}),
                       ("bookmux_aggregator_levels_total", {"venue": "binance", "symbol": "BTC/USDT"}),
                       ("bookmux_aggregator_snapshots_published_total", {"symbol": "BTC/USDT"}),
                       ("bookmux_aggregator_latency_seconds_count", {"symbol": "BTC/USDT"})],
        "publisher": [("bookmux_publisher_snapshots_published_total", {}),
                      ("bookmux_publisher_latency_seconds_count", {"symbol": "ETH/USDT"})],
        "gateway_grpc": [("bookmux_gateway_books_received_total", {})],
    }
    before = {name: scrape(pipe.ports[name]) for name in watched}
    for name, items in watched.items():
        for metric, labels in items:
            first = value(before[name], metric, **labels)
            wait_until(lambda name=name, metric=metric, labels=labels, first=first:
                       value(scrape(pipe.ports[name]), metric, **labels) > first,
                       timeout=30, pump=lambda: pipe.sub.drain(0), what=f"{name} {metric}{labels} growing")
    agg = scrape(pipe.ports["aggregator"])
    for venue in ("binance", "bitstamp"):
        for sym in SYMS:
            assert value(agg, "bookmux_aggregator_venue_status", venue=venue, symbol=sym, status="live") == 1.0
            assert value(agg, "bookmux_aggregator_venue_status", venue=venue, symbol=sym, status="down") == 0.0
            assert value(agg, "bookmux_aggregator_book_levels", venue=venue, symbol=sym, side="bid") > 0
        assert value(agg, "bookmux_aggregator_feed_up", venue=venue, shard="0") == 1.0
    feed = scrape(pipe.ports["feed_binance"])
    assert value(feed, "bookmux_feed_symbol_status", venue="binance", symbol="BTC/USDT", status="live") == 1.0
    assert value(feed, "bookmux_feed_connected", venue="binance") == 1.0
    # The test's subscriber and the gateway (the client library) each hold one subscription per symbol.
    pub = scrape(pipe.ports["publisher"])
    assert value(pub, "bookmux_publisher_subscriptions", symbol="BTC/USDT") == 2.0
    assert value(pub, "bookmux_publisher_subscriptions", symbol="ETH/USDT") == 1.0
    assert value(pub, "bookmux_publisher_upstream_up") == 1.0


@pytest.mark.slow
def test_queries_and_streams_are_counted(pipe: Pipeline) -> None:
    """Each depletion query is one observation of the query latency; an open gRPC stream shows in
    the gateway's stream gauge while it is open and leaves it when it ends."""
    import grpc

    from common.subscriber import deplete
    from services.gateway_grpc import stubs

    agg, gw = pipe.ports["aggregator"], pipe.ports["gateway_grpc"]
    before = value(scrape(agg), "bookmux_aggregator_query_seconds_count")
    for _ in range(3):
        deplete(pipe.ep["query"], "BTC/USDT", "buy", "1", timeout=10)
    assert value(scrape(agg), "bookmux_aggregator_query_seconds_count") == before + 3
    bm = stubs.load("bookmux")
    with grpc.insecure_channel(f"127.0.0.1:{pipe.grpc_port}") as ch:
        call = bm.services.BooksStub(ch).Subscribe(bm.messages.SubscribeRequest(symbol="ETH/USDT"), timeout=60)
        assert next(iter(call)).symbol == "ETH/USDT"
        assert value(scrape(gw), "bookmux_gateway_streams", method="Subscribe", symbol="ETH/USDT") == 1.0
        call.cancel()
    wait_until(lambda: ("bookmux_gateway_streams", (("method", "Subscribe"), ("symbol", "ETH/USDT")))
               not in scrape(gw), timeout=30, what="the cancelled stream leaving the gauge")
    assert value(scrape(gw), "bookmux_gateway_streams_opened_total") == 1.0


@pytest.mark.slow
def test_readiness_follows_a_killed_feed(pipe: Pipeline) -> None:
    """kill -9 of the Binance feed: the aggregator's /readyz turns 503 naming its books and its venue
    status metric says down; the feed restarted, both come back (times reported, not asserted)."""
    agg = pipe.ports["aggregator"]
    t0 = time.monotonic()
    pipe.procs.kill("feed_binance", signal.SIGKILL)
    took_status = wait_until(
        lambda: value(scrape(agg), "bookmux_aggregator_venue_status", venue="binance", symbol="BTC/USDT",
                      status="down") == 1.0, timeout=30, what="aggregator venue status binance down")
    took_ready = wait_until(lambda: pipe.readyz("aggregator")[0] == 503, timeout=30, what="aggregator /readyz 503")
    status, body = pipe.readyz("aggregator")
    assert status == 503 and body["ready"] is False
    assert sorted(body["not_live"]) == ["binance BTC/USDT", "binance ETH/USDT"]
    assert body["feeds_down"] == ["binance"] and sorted(body["degraded_symbols"]) == SYMS
    assert body["reason"] == "2 of 4 venue book(s) not live: binance BTC/USDT, binance ETH/USDT"
    samples = scrape(agg)
    assert value(samples, "bookmux_aggregator_feed_up", venue="binance", shard="0") == 0.0
    assert value(samples, "bookmux_aggregator_venue_status", venue="bitstamp", symbol="BTC/USDT", status="live") == 1.0
    assert get(pipe.ports["feed_binance"], "/healthz")[0] == 0      # the killed process serves nothing
    REPORT.append(f"kill -9 feed_binance: aggregator venue status down after {took_status:.3f} s, "
                  f"/readyz 503 after {time.monotonic() - t0:.3f} s (wait {took_ready:.3f} s)")
    t1 = time.monotonic()
    pipe.start_feed("binance")
    wait_until(lambda: pipe.ready("feed_binance"), timeout=60, what="restarted feed_binance /readyz 200")
    took_feed = time.monotonic() - t1
    wait_until(lambda: pipe.ready("aggregator"), timeout=60, what="aggregator /readyz 200 again")
    samples = scrape(agg)
    assert value(samples, "bookmux_aggregator_venue_status", venue="binance", symbol="BTC/USDT", status="live") == 1.0
    assert value(samples, "bookmux_aggregator_feed_up", venue="binance", shard="0") == 1.0
    REPORT.append(f"feed_binance restarted: its /readyz 200 after {took_feed:.2f} s, the aggregator's after "
                  f"{time.monotonic() - t1:.2f} s")
    assert total(samples, "bookmux_aggregator_feed_disconnects_total") == 1.0


@pytest.mark.slow
def test_alert_rules_read_exported_metrics(pipe: Pipeline) -> None:
    """Every bookmux metric an alert rule of deploy/alerts.yml reads is exported by a service, and
    the README shows the same rules."""
    text = (REPO / "deploy" / "alerts.yml").read_text()
    exprs = [ln.split("expr:", 1)[1].strip() for ln in text.splitlines() if ln.strip().startswith("expr:")]
    assert len(exprs) == 7
    exported = {name for port in pipe.ports.values() for name, _ in scrape(port)}
    used = {m for e in exprs for m in re.findall(r"bookmux_[a-z_]+", e)}
    assert used - exported == set()
    readme = (REPO / "README.md").read_text()
    assert [e for e in exprs if e not in readme] == []
