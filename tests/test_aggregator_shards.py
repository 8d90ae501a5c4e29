"""Scale-out (``[[aggregator.shards]]``): the config rules and the routing by symbol in-process, the
aggregator's --shard flag, the publisher's republish routing against fake aggregators, and the whole
pipeline on the simulator with two aggregator processes: books equal to the truth after a fault,
contiguous ``seq`` per symbol, late joiners served by the shard owning their symbol, depletion
queries answered by the right shard."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import time
import tomllib
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from common import config, schema
from common.config import ConfigError
from common.ports import free_port
from common.query import NoRoute, endpoint_for
from common.subscriber import QueryRefused, deplete
from deploy import ports, supervisor
from services.client import deplete_cmd
from tests.harness import SimPipeline, Subscriber, wait_until

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "deploy" / "demo.toml"
RAW: dict[str, Any] = tomllib.loads(DEMO.read_text())   # symbols BTC/USDT, BTC/USD, ETH/USDT


def _sharded(shards: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
    """demo.toml with the aggregator split in two (shard 0 on the aggregator's ports, shard 1 on the plan's)."""
    raw = copy.deepcopy(RAW)
    for k in ("pub", "ctl", "query", "metrics"):
        raw["aggregator"].pop(k)
    raw["aggregator"]["shards"] = shards if shards is not None else [
        {"symbols": ["BTC/USDT", "ETH/USDT"], "pub": "tcp://127.0.0.1:50054", "ctl": "tcp://127.0.0.1:50055",
         "query": "tcp://127.0.0.1:50053", "metrics": "127.0.0.1:50100"},
        {"symbols": ["BTC/USD"], "pub": "tcp://127.0.0.1:50057", "ctl": "tcp://127.0.0.1:50058",
         "query": "tcp://127.0.0.1:50059", "metrics": "127.0.0.1:50103"}]
    raw.update(top)
    return raw


def _shard(symbols: list[str], port: int, metrics: str | None = None) -> dict[str, Any]:
    out = {"symbols": symbols, "pub": f"tcp://127.0.0.1:{port}", "ctl": f"tcp://127.0.0.1:{port + 1}",
           "query": f"tcp://127.0.0.1:{port + 2}"}
    return out | ({"metrics": metrics} if metrics else {})


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        config.build(raw)
    return str(e.value)


# --- config ---------------------------------------------------------------------------------------


def test_shards_build_processes_and_accessors() -> None:
    """Two shards: processes, the owner of each symbol, shard(i) and the top-level endpoints = shard 0's."""
    c = config.build(_sharded())
    agg = c.aggregator
    assert [(a.index, a.symbols, a.pub, a.ctl, a.query, a.metrics) for a in agg.processes] == [
        (0, ("BTC/USDT", "ETH/USDT"), "tcp://127.0.0.1:50054", "tcp://127.0.0.1:50055", "tcp://127.0.0.1:50053",
         "127.0.0.1:50100"),
        (1, ("BTC/USD",), "tcp://127.0.0.1:50057", "tcp://127.0.0.1:50058", "tcp://127.0.0.1:50059",
         "127.0.0.1:50103")]
    assert (agg.pub, agg.ctl, agg.query, agg.metrics) == ("tcp://127.0.0.1:50054", "tcp://127.0.0.1:50055",
                                                         "tcp://127.0.0.1:50053", "127.0.0.1:50100")
    one = agg.shard(1)
    assert (one.pub, one.ctl, one.query, one.metrics, one.symbols, one.shards, one.index) == (
        "tcp://127.0.0.1:50057", "tcp://127.0.0.1:50058", "tcp://127.0.0.1:50059", "127.0.0.1:50103",
        ("BTC/USD",), (), 1)
    assert [agg.owner(s).index for s in ("BTC/USDT", "ETH/USDT", "BTC/USD")] == [0, 0, 1]  # type: ignore[union-attr]
    assert agg.owner("DOGE/USD") is None
    assert agg.query_routes() == {"BTC/USDT": "tcp://127.0.0.1:50053", "ETH/USDT": "tcp://127.0.0.1:50053",
                                  "BTC/USD": "tcp://127.0.0.1:50059"}
    assert agg.query_endpoint("BTC/USD") == "tcp://127.0.0.1:50059"
    assert agg.query_endpoint("DOGE/USD") is None


def test_without_shards_one_process_with_every_symbol() -> None:
    """No shards: one process with the [aggregator] endpoints and every configured symbol; --shard 0 is it."""
    c = config.build(RAW)
    agg = c.aggregator
    assert agg.shards == () and agg.index is None
    assert [(a.index, a.symbols, a.pub, a.query) for a in agg.processes] == [
        (0, ("BTC/USDT", "BTC/USD", "ETH/USDT"), "tcp://127.0.0.1:50054", "tcp://127.0.0.1:50053")]
    assert c.for_aggregator(None) is c
    assert c.for_aggregator(0).aggregator == agg
    assert c.for_aggregator(0).venues == c.venues
    assert agg.route([]) == {0: []}
    assert agg.route(["BTC/USD", "ETH/USDT"]) == {0: ["BTC/USD", "ETH/USDT"]}
    with pytest.raises(ConfigError, match=r"^aggregator.shards: the config has 1 aggregator process\(es\) "
                                          r"\(--shard 0..0\); --shard 1 is not one$"):
        c.for_aggregator(1)


def test_routing_by_symbol() -> None:
    """Republish requests grouped by owning shard; [] (every symbol) to every shard; unknown symbols dropped."""
    agg = config.build(_sharded()).aggregator
    assert agg.route([]) == {0: [], 1: []}
    assert agg.route(["BTC/USD"]) == {1: ["BTC/USD"]}
    assert agg.route(["ETH/USDT", "BTC/USD", "DOGE/USD", "BTC/USDT"]) == {0: ["ETH/USDT", "BTC/USDT"],
                                                                         1: ["BTC/USD"]}
    assert agg.route(["DOGE/USD"]) == {}


def test_for_aggregator_keeps_only_the_shards_symbols() -> None:
    """A shard's config: its endpoints, its symbols at the top level and per venue, venues without any left out."""
    c = config.build(_sharded())
    s1 = c.for_aggregator(1)
    assert s1.aggregator.index == 1 and s1.aggregator.pub == "tcp://127.0.0.1:50057"
    assert s1.all_symbols == ["BTC/USD"]
    assert {v.id: v.symbols for v in s1.enabled_venues} == {
        v.id: ("BTC/USD",) for v in c.enabled_venues if "BTC/USD" in v.symbols}
    assert all("BTC/USD" not in v.symbols for v in c.enabled_venues if v.id not in {x.id for x in s1.enabled_venues})
    s0 = c.for_aggregator(0)
    assert s0.all_symbols == ["BTC/USDT", "ETH/USDT"]
    assert s0.aggregator.query == "tcp://127.0.0.1:50053"
    with pytest.raises(ConfigError, match=r"^aggregator.shards: the config splits the aggregator in 2 processes; "
                                          r"run each with --shard 0..1$"):
        c.for_aggregator(None)
    with pytest.raises(ConfigError, match=r"^aggregator.shards: the config has 2 aggregator process\(es\)"):
        c.for_aggregator(2)


def test_for_aggregator_splits_feed_shards_too() -> None:
    """A venue split in feed shards: the aggregator shard keeps only the feed processes carrying its symbols."""
    raw = _sharded()
    raw["venues"]["binance"].pop("metrics", None)
    raw["venues"]["binance"]["shards"] = [
        {"symbols": ["BTC/USDT"], "pub": "tcp://127.0.0.1:50072", "ctl": "tcp://127.0.0.1:50073"},
        {"symbols": ["ETH/USDT"], "pub": "tcp://127.0.0.1:50074", "ctl": "tcp://127.0.0.1:50075"}]
    raw["aggregator"]["shards"] = [_shard(["BTC/USDT", "BTC/USD"], 50053), _shard(["ETH/USDT"], 50057)]
    c = config.build(raw)
    b1 = c.for_aggregator(1).venue("binance")
    assert [(sh.index, sh.symbols, sh.pub) for sh in b1.processes] == [(1, ("ETH/USDT",), "tcp://127.0.0.1:50074")]
    b0 = c.for_aggregator(0).venue("binance")
    assert [(sh.index, sh.symbols) for sh in b0.processes] == [(0, ("BTC/USDT",))]


@pytest.mark.parametrize("shards,message", [
    ([_shard(["BTC/USDT", "BTC/USD"], 50053), _shard(["BTC/USD", "ETH/USDT"], 50057)],
     "aggregator.shards[1].symbols: BTC/USD is already in shard 0"),
    ([_shard(["BTC/USDT"], 50053), _shard(["BTC/USD"], 50057)],
     "aggregator.shards: no shard merges ['ETH/USDT']; every carried symbol must be in the symbols of one "
     "[[aggregator.shards]]"),
    ([_shard(["BTC/USDT", "BTC/USD"], 50053), _shard(["ETH/USDT", "DOGE/USD"], 50057)],
     "aggregator.shards[1].symbols: DOGE/USD is not a configured symbol (top-level symbols or an enabled "
     "venue's); configured: ['BTC/USDT', 'BTC/USD', 'ETH/USDT']"),
    ([_shard(["BTC/USDT", "BTC/USD"], 50053), _shard(["ETH/USDT"], 50054)],
     "aggregator.shards[0].ctl tcp://127.0.0.1:50054 is also aggregator.shards[1].pub: every socket needs its "
     "own endpoint"),
    ([_shard(["BTC/USDT", "BTC/USD"], 50053), _shard(["ETH/USDT"], 50060)],
     "venues.binance.pub tcp://127.0.0.1:50060 is also aggregator.shards[1].pub: every socket needs its own "
     "endpoint"),
    ([_shard(["BTC/USDT", "BTC/USD"], 50053, "127.0.0.1:50100"), _shard(["ETH/USDT"], 50057, "127.0.0.1:50101")],
     "publisher.metrics 127.0.0.1:50101 is also aggregator.shards[1].metrics: every process needs its own "
     "metrics address"),
    ([_shard(["BTC/USDT", "BTC/USD"], 50053), _shard(["ETH/USDT"], 50057) | {"query": "tcp://10.0.0.1:50059"}],
     "aggregator.shards[1].query: '10.0.0.1' is not a loopback address and security.curve is off"),
    ([], "aggregator.shards: List should have at least 1 item"),
    ([_shard([], 50053)], "aggregator.shards[0].symbols"),
    ([_shard(["BTC/USDT"], 50053) | {"cpu": 1}], "aggregator.shards[0]: unknown key(s) ['cpu']; allowed: "
     "['ctl', 'metrics', 'pub', 'query', 'symbols']"),
])
def test_shard_rules_name_the_key(shards: list[dict[str, Any]], message: str) -> None:
    """Overlapping, missing, unknown symbols, clashing endpoints and metrics: errors that name the key."""
    got = _error(_sharded(shards))
    assert got.startswith(message), got


def test_symbols_flag_cannot_re_split_aggregator_shards(tmp_path: Path) -> None:
    """--symbols with [[aggregator.shards]] is refused, naming the key."""
    path = tmp_path / "sharded.toml"
    path.write_text(DEMO.read_text().replace("[aggregator.depletion]", "[[aggregator.shards]]\n"
                                             'symbols = ["BTC/USDT", "BTC/USD", "ETH/USDT"]\n'
                                             'pub = "tcp://127.0.0.1:50057"\nctl = "tcp://127.0.0.1:50058"\n'
                                             'query = "tcp://127.0.0.1:50059"\n\n[aggregator.depletion]'))
    assert config.load(path).aggregator.processes[0].pub == "tcp://127.0.0.1:50057"
    with pytest.raises(ConfigError, match=r"^--symbols cannot re-split aggregator.shards"):
        config.load(path, symbols="BTC/USDT")


def test_endpoint_for_routes_queries() -> None:
    """One endpoint answers every symbol; a mapping routes by symbol, NoRoute for a symbol it lacks."""
    routes = config.build(_sharded()).aggregator.query_routes()
    assert endpoint_for("tcp://127.0.0.1:1", "DOGE/USD") == "tcp://127.0.0.1:1"
    assert endpoint_for(routes, "BTC/USD") == "tcp://127.0.0.1:50059"
    assert endpoint_for(routes, "eth/usdt") == "tcp://127.0.0.1:50053"
    with pytest.raises(NoRoute, match=r"^no aggregator shard answers for 'DOGE/USD'; carried: \['BTC/USD', "):
        endpoint_for(routes, "DOGE/USD")


# --- deploy ---------------------------------------------------------------------------------------


def test_supervisor_runs_one_aggregator_per_shard() -> None:
    """One program per shard with --shard I; the cluster endpoints name each shard's program."""
    c = config.build(_sharded())
    progs = {p.name: p.command for p in supervisor.programs(c, common="--config x", demo=False, python="py")}
    assert progs["aggregator_0"] == "py -m services.aggregator --shard 0 --config x"
    assert progs["aggregator_1"] == "py -m services.aggregator --shard 1 --config x"
    assert "aggregator" not in progs
    eps = {e.key: e for e in supervisor.endpoints(c)}
    assert (eps["aggregator.shards[1].pub"].binder, eps["aggregator.shards[1].pub"].peers) == (
        "aggregator_1", ("publisher",))
    assert eps["aggregator.shards[0].query"].binder == "aggregator_0"
    assert eps["aggregator.shards[1].metrics"].port == 50103
    assert eps["venues.gemini.pub"].peers == ("aggregator_1",)           # gemini carries BTC/USD only
    assert eps["venues.bitstamp.pub"].peers == ("aggregator_0", "aggregator_1")
    assert "aggregator.pub" not in eps
    plain = {p.name for p in supervisor.programs(config.build(RAW), common="", demo=False, python="py")}
    assert "aggregator" in plain and "aggregator_0" not in plain


def test_cluster_places_aggregator_shards_on_hosts() -> None:
    """--cluster: each aggregator shard is a program a host must run, checked like any other."""
    raw = _sharded()
    c = config.build(raw)
    names = [p.name for p in supervisor.programs(c, common="", demo=True, python="py")]
    others = [n for n in names if not n.startswith("aggregator_")]
    hosts = supervisor.load_cluster({"hosts": {"a": {"addresses": ["127.0.0.1"], "programs": [*others, "aggregator_0"]},
                                               "b": {"addresses": ["10.0.0.2"], "programs": ["aggregator_1"]}}},
                                    names)
    with pytest.raises(ConfigError, match=r"^security.curve: a cluster of 2 hosts needs"):
        supervisor.check_cluster(c, hosts, supervisor.endpoints(c))
    c = config.build(raw | {"security": {"curve": True}})
    # binance carries shard 0's symbols only (both on host a); bitstamp's bus is dialled from host b too
    with pytest.raises(ConfigError, match=r"^venues.bitstamp.pub: loopback 127.0.0.1, but feed_bitstamp runs on a "
                                          r"and \['aggregator_0', 'aggregator_1'\] on \['b'\]"):
        supervisor.check_cluster(c, hosts, supervisor.endpoints(c))
    with pytest.raises(ConfigError, match=r"^cluster.hosts: no host runs \['aggregator_1'\]"):
        supervisor.load_cluster({"hosts": {"a": {"addresses": ["127.0.0.1"],
                                                 "programs": [*others, "aggregator_0"]}}}, names)


def test_port_plan_has_the_second_shard_and_the_example_follows_it() -> None:
    """deploy/ports.py plans shard 1 (50057-50059, metrics 50103); bookmux.toml's commented example uses them."""
    plan = ports.all_ports()
    assert [plan[f"aggregator.shards[1].{k}"] for k in ("pub", "ctl", "query", "metrics")] == [
        50057, 50058, 50059, 50103]
    assert len(set(plan.values())) == len(plan)
    text = (REPO / "deploy" / "bookmux.toml").read_text()
    lines = [ln.removeprefix("# ") if ln.startswith(("# [[aggregator.shards]]", "# symbols =", "# pub =", "# ctl =",
                                                     "# query =", "# metrics ="))
             else ln for ln in text.splitlines()]
    raw = tomllib.loads("\n".join(lines))
    for k in ("pub", "ctl", "query", "metrics"):
        raw["aggregator"].pop(k)
    c = config.build(raw)
    got = {}
    for a in c.aggregator.processes:
        for k in ("pub", "ctl", "query", "metrics"):
            got[f"aggregator.shards[{a.index}].{k}"] = int(str(getattr(a, k)).rsplit(":", 1)[1])
    want = {f"aggregator.shards[0].{k}": plan[f"aggregator.{k}"] for k in ("pub", "ctl", "query", "metrics")}
    want |= {f"aggregator.shards[1].{k}": plan[f"aggregator.shards[1].{k}"] for k in ("pub", "ctl", "query", "metrics")}
    assert got == want


# --- the aggregator's --shard ----------------------------------------------------------------------


def _run_aggregator(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.aggregator", "--config", str(cfg), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in __import__("os").environ.items() if k != "SUPERVISOR_ENABLED"})


def test_aggregator_without_or_with_a_wrong_shard_exits_2_naming_the_key(tmp_path: Path) -> None:
    """No --shard with shards configured, or one out of range: exit 2, the key on the last stderr line."""
    path = tmp_path / "sharded.toml"
    tables = "".join(f'[[aggregator.shards]]\nsymbols = {json.dumps(syms)}\npub = "tcp://127.0.0.1:{free_port()}"\n'
                     f'ctl = "tcp://127.0.0.1:{free_port()}"\nquery = "tcp://127.0.0.1:{free_port()}"\n\n'
                     for syms in (["BTC/USDT", "BTC/USD"], ["ETH/USDT"]))
    path.write_text(DEMO.read_text().replace("[aggregator.depletion]", tables + "[aggregator.depletion]"))
    p = _run_aggregator(path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "aggregator: configuration error: aggregator.shards: the config splits the aggregator in 2 processes; "
        "run each with --shard 0..1")
    p = _run_aggregator(path, "--shard", "2")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "aggregator_2: configuration error: aggregator.shards: the config has 2 aggregator process(es) "
        "(--shard 0..1); --shard 2 is not one")


def _loopback(symbols: list[str], shards: list[list[str]]) -> dict[str, Any]:
    """Two venues carrying ``symbols`` and the aggregator split as ``shards``, all on free ports."""
    venues = {vid: {"kind": vid, "ws_url": "ws://127.0.0.1:1", "rest_url": "http://127.0.0.1:1",
                    "pub": f"tcp://127.0.0.1:{free_port()}", "ctl": f"tcp://127.0.0.1:{free_port()}"}
              for vid in ("binance", "bitstamp")}
    return {"symbols": symbols, "venues": venues,
            "aggregator": {"shards": [_shard(syms, 0) | {k: f"tcp://127.0.0.1:{free_port()}"
                                                          for k in ("pub", "ctl", "query")} for syms in shards]},
            "publisher": {"port": free_port()}}


def test_a_shard_subscribes_to_and_asks_snapshots_of_its_own_symbols_only() -> None:
    """Aggregator shard 1 (BTC/USD): feed topics md.<venue>.BTC/USD and heartbeats only; snapshots of BTC/USD only."""
    from services.aggregator.service import Aggregator

    cfg = config.build(_loopback(["BTC/USDT", "ETH/USDT", "BTC/USD"], [["BTC/USDT", "ETH/USDT"], ["BTC/USD"]]))
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    try:
        feeds = {}
        for v in cfg.enabled_venues:
            x, r = ctx.socket(zmq.XPUB), ctx.socket(zmq.ROUTER)
            x.bind(v.pub)
            r.bind(v.ctl)
            socks += [x, r]
            feeds[v.id] = (x, r)
        agg = Aggregator(cfg.for_aggregator(1), ctx=ctx)
        try:
            assert list(agg.states) == ["BTC/USD"]
            # one SUB socket connected to every feed: each feed sees the socket's subscriptions
            want = {b"hb.", b"md.binance.BTC/USD", b"md.bitstamp.BTC/USD"}
            for vid, (x, r) in feeds.items():
                subs: set[bytes] = set()
                while subs != want:          # in whatever order the subscriptions reached the feed
                    assert x.poll(10_000), (vid, subs)
                    frame = x.recv()
                    (subs.add if frame[0] == 1 else subs.discard)(frame[1:])
                assert r.poll(10_000), vid
                assert schema.decode_snapshot_request(r.recv_multipart()[-1]) == ["BTC/USD"]
        finally:
            agg.close()
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()


# --- the publisher's republish routing -------------------------------------------------------------


def test_publisher_sends_each_republish_request_to_the_owning_shard(tmp_path: Path) -> None:
    """A late joiner's symbol goes to its shard's ctl, "every symbol" to each, only once that shard was heard."""
    from services.publisher.service import Publisher

    raw = _sharded([_shard(["BTC/USDT", "BTC/USD"], free_port()), _shard(["ETH/USDT"], free_port())])
    for k in ("metrics",):
        raw["publisher"].pop(k, None)
    raw["publisher"]["port"] = free_port()
    raw["publisher"].pop("latest_port", None)
    cfg = config.build(raw)
    ctx = zmq.Context()
    routers, pubs = [], []
    try:
        for a in cfg.aggregator.processes:
            r = ctx.socket(zmq.ROUTER)
            r.bind(a.ctl)
            routers.append(r)
            x = ctx.socket(zmq.XPUB)
            x.bind(a.pub)
            pubs.append(x)
        p = Publisher(cfg, levels=10, ctx=ctx)
        try:
            def requests(i: int) -> list[list[str]]:
                out = []
                while routers[i].poll(200):
                    out.append(schema.decode_snapshot_request(routers[i].recv_multipart()[-1]))
                return out

            p.on_subscription(b"\x01book.ETH/USDT")           # shard 1 not heard yet: held
            p.on_subscription(b"\x01book.BTC/USD")            # shard 0 not heard yet: held
            assert requests(0) == [] and requests(1) == []
            assert p.deferred == {0: {"BTC/USD"}, 1: {"ETH/USDT"}}
            for i, sym in ((0, "BTC/USDT"), (1, "ETH/USDT")):
                assert pubs[i].poll(10_000), f"the publisher's subscription reaching shard {i}"
                assert pubs[i].recv() == b"\x01book."
                p.on_snapshot(_book(sym))
            assert requests(0) == [["BTC/USD"]] and requests(1) == [["ETH/USDT"]]
            p.on_subscription(b"\x01book.BTC/USDT")
            p.on_subscription(b"\x01book.ETH/USDT")
            p.on_subscription(b"\x01book.DOGE/USD")           # no shard carries it: nobody asked
            assert requests(0) == [["BTC/USDT"]] and requests(1) == [["ETH/USDT"]]
            p.on_subscription(b"\x01book.")                   # every symbol: every shard
            assert requests(0) == [[]] and requests(1) == [[]]
        finally:
            p.close()
    finally:
        for s in routers + pubs:
            s.close(0)
        ctx.term()


def _book(symbol: str, seq: int = 1) -> list[bytes]:
    return schema.encode_merged(schema.MergedBook(symbol, 7, seq, 1, None, [], [], {"binance": "live"}, None, {}))


# --- the whole pipeline with two aggregators -------------------------------------------------------

SYMS = ["BTC/USDT", "ETH/USDT", "BTC/USD"]
#: BTC/USD and BTC/USDT on different shards: ZeroMQ's prefix match brings shard 0 BTC/USDT's
#: stream too (md.<venue>.BTC/USD is a prefix of it), which it must drop.
SHARDS = [["BTC/USD", "ETH/USDT"], ["BTC/USDT"]]
VENUES = {"binance": {"kind": "binance", "api": "spot"}, "bitstamp": {"kind": "bitstamp", "api": "v2"}}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimPipeline]:
    p = SimPipeline(tmp_path_factory.mktemp("shards"), VENUES, SYMS, agg_shards=SHARDS,
                    stale_after=30.0)       # no venue goes stale while the market is paused
    try:
        p.start()
        yield p
    finally:
        p.close()


def _epochs(pipe: SimPipeline) -> dict[str, set[int]]:
    return {s: {m["epoch"] for m in pipe.subs[s].received} for s in SYMS}


def test_two_aggregators_books_equal_truth_after_a_gap_with_contiguous_seq(pipe: SimPipeline) -> None:
    """Traffic, a gap on a symbol of each shard; every published top-N = the merged truth; seq contiguous."""
    pipe.settle("start-up", timeout=120)
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 > 3, timeout=10, pump=pipe.drain, what="3 s of traffic")
    log_marks = {i: len(pipe.procs.log(f"aggregator_{i}")) for i in range(2)}
    pipe.sim.get("/fault", venue="binance", kind="gap", symbol="BTC/USDT")     # shard 1's symbol
    pipe.sim.get("/fault", venue="binance", kind="gap", symbol="ETH/USDT")     # shard 0's
    wait_until(lambda: "binance BTC/USDT: " in pipe.procs.log("aggregator_1")[log_marks[1]:]
               and "binance ETH/USDT: " in pipe.procs.log("aggregator_0")[log_marks[0]:],
               timeout=30, pump=pipe.drain, what="each shard's aggregator seeing its stream leave live")
    pipe.settle("after the gaps", timeout=90)
    for s in SYMS:
        got = pipe.subs[s].received
        assert got, s
        assert {tuple(m["venues"]) for m in got} == {("binance", "bitstamp")}
    epochs = _epochs(pipe)
    assert all(len(e) == 1 for e in epochs.values()), epochs
    # one epoch per aggregator process: the symbols of one shard share it, the two shards differ
    assert epochs["BTC/USD"] == epochs["ETH/USDT"] != epochs["BTC/USDT"]
    for s in SYMS:
        seqs = [m["seq"] for m in pipe.subs[s].received]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (s, seqs[:5], len(seqs))
    # the shards' logs: each took its own symbols only
    log0, log1 = pipe.procs.log("aggregator_0"), pipe.procs.log("aggregator_1")
    assert "shard 0 of 2: symbols ['BTC/USD', 'ETH/USDT']" in log0
    assert "shard 1 of 2: symbols ['BTC/USDT']" in log1
    assert "BTC/USDT: live" not in log0 and "BTC/USD: live" not in log1 and "ETH/USDT: live" not in log1


def _quiet(pipe: SimPipeline) -> None:
    """Pause the market and drain until nothing has arrived for a while (nothing left in flight)."""
    pipe.sim.get("/pause")
    marks = pipe.marks()
    last = [time.monotonic()]

    def still() -> bool:
        nonlocal marks
        now = pipe.marks()
        if now != marks:
            marks, last[0] = now, time.monotonic()
        return time.monotonic() - last[0] > 1.0
    wait_until(still, timeout=30, pump=pipe.drain, what="the paused market going quiet")


def test_late_joiners_get_each_symbol_from_its_own_shard(pipe: SimPipeline) -> None:
    """A new subscriber of each symbol gets its book at once, from the owning shard (its epoch, the next seq)."""
    pipe.settle("before the late joiners", timeout=90)
    _quiet(pipe)
    try:
        for s in SYMS:
            before = pipe.subs[s].received[-1]
            late = Subscriber(f"tcp://127.0.0.1:{pipe.ep['pub_port']}", s, pipe.ctx)
            try:
                wait_until(lambda late=late: bool(late.drain(10)), timeout=30,  # type: ignore[misc]
                           what=f"a late joiner's book of {s}")
                got = late.received[0]
            finally:
                late.sock.close(0)
            assert (got["symbol"], got["epoch"], got["seq"]) == (s, before["epoch"], before["seq"] + 1)
            assert (got["bids"], got["asks"]) == pipe.truth(s)
            # the existing subscriber saw the same republished book, contiguous
            want = before["seq"] + 1
            wait_until(lambda s=s, want=want: pipe.subs[s].received[-1]["seq"] == want,  # type: ignore[misc]
                       timeout=30, pump=pipe.drain, what=f"{s}: the republished book on the existing subscription")
    finally:
        pipe.sim.get("/resume")


def test_depletion_queries_answered_by_the_owning_shard(pipe: SimPipeline) -> None:
    """deplete() with the config's routes, and the CLI, ask each symbol's own shard (its epoch and last seq)."""
    pipe.settle("before the queries", timeout=90)
    _quiet(pipe)
    try:
        cfg = config.load(pipe.cfg)
        routes = cfg.aggregator.query_routes()
        assert routes == {"BTC/USD": pipe.agg_shards[0]["query"], "ETH/USDT": pipe.agg_shards[0]["query"],
                          "BTC/USDT": pipe.agg_shards[1]["query"]}
        for s in SYMS:
            last = pipe.subs[s].received[-1]
            reply = deplete(routes, s, "buy", "1", timeout=10)
            assert (reply.symbol, reply.epoch, reply.seq) == (s, last["epoch"], last["seq"])
            assert set(reply.statuses) == {"binance", "bitstamp"}
            out, err = io.StringIO(), io.StringIO()
            args = Namespace(symbol=s, side="sell", amount="1", notional=False, venue=None, json=True, endpoint=None,
                             deplete_config=str(pipe.cfg), timeout=10.0, server_key=None, client_key=None)
            assert deplete_cmd.run(args, out=out, err=err) == 0, err.getvalue()
            answer = json.loads(out.getvalue())
            assert (answer["symbol"], answer["epoch"], answer["seq"]) == (s, last["epoch"], last["seq"])
        # the other shard does not carry the symbol: it says so
        with pytest.raises(QueryRefused, match="BTC/USDT"):
            deplete(str(pipe.agg_shards[0]["query"]), "BTC/USDT", "buy", "1", timeout=10)
        with pytest.raises(NoRoute):
            deplete(routes, "DOGE/USD", "buy", "1", timeout=10)
    finally:
        pipe.sim.get("/resume")
