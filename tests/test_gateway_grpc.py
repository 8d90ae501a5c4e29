"""The gRPC gateway: the challenge's OrderbookAggregator stream and bookmux.Books, over the real
pipeline (simulator -> both feeds -> aggregator -> publisher -> gateway), checked against ZeroMQ
snapshots of the same symbol; plus its pure parts in-process (conversion, mailbox, config)."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import grpc.aio
import msgpack
import pytest
import zmq

from common import config
from common.config import ConfigError
from common.schema import DepletionSummary, Level, MergedBook, VenueTimes
from deploy import supervisor
from services.gateway_grpc import convert, stubs
from services.gateway_grpc.hub import Hub, Mailbox
from tests.harness import REPO, Procs, SimControl, free_port, wait_until, write_config

# The challenge's interface, verbatim: a client generated from this text must work unchanged.
CHALLENGE_PROTO = (
    'syntax = "proto3"; package orderbook; service OrderbookAggregator { rpc BookSummary(Empty) returns '
    '(stream Summary); } message Empty {} message Summary { double spread = 1; repeated Level bids = 2; '
    'repeated Level asks = 3; } message Level { string exchange = 1; double price = 2; double amount = 3; }')
SYMS = ["BTC/USDT", "ETH/USDT"]
N = 5          # the gateway's depth (the publisher publishes PUB_LEVELS)
PUB_LEVELS = 10


def _protoc(*args: str) -> None:
    import importlib.resources

    from grpc_tools import protoc

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    assert protoc.main(["protoc", f"-I{well_known}", *args]) == 0


@pytest.fixture(scope="session")
def challenge(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Stubs generated from the challenge's proto text, as a challenge client has them."""
    d = tmp_path_factory.mktemp("challenge")
    (d / "src" / "challenge_client").mkdir(parents=True)
    (d / "out" / "challenge_client").mkdir(parents=True)
    (d / "src" / "challenge_client" / "orderbook.proto").write_text(CHALLENGE_PROTO)
    _protoc(f"-I{d / 'src'}", f"--python_out={d / 'out'}", f"--grpc_python_out={d / 'out'}",
            str(d / "src" / "challenge_client" / "orderbook.proto"))
    (d / "out" / "challenge_client" / "__init__.py").write_text("")
    sys.path.append(str(d / "out"))
    return SimpleNamespace(pb=importlib.import_module("challenge_client.orderbook_pb2"),
                           grpc=importlib.import_module("challenge_client.orderbook_pb2_grpc"))


# --- the proto and the pure parts -----------------------------------------------------------------


def test_repo_proto_is_the_challenge_proto(tmp_path: Path) -> None:
    """protos/orderbook.proto compiles to the same descriptor as the challenge's text."""
    from google.protobuf import descriptor_pb2

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "orderbook.proto").write_text(CHALLENGE_PROTO)
    _protoc(f"-I{tmp_path / 'a'}", f"--descriptor_set_out={tmp_path / 'a.bin'}", "orderbook.proto")
    _protoc(f"-I{stubs.PROTO_DIR}", f"--descriptor_set_out={tmp_path / 'b.bin'}", "orderbook.proto")
    a, b = (descriptor_pb2.FileDescriptorSet.FromString((tmp_path / f).read_bytes()).file[0]
            for f in ("a.bin", "b.bin"))
    assert b.package == "orderbook" and b.syntax == "proto3"
    assert a == b


def _book(bids: list[tuple[str, str, str]], asks: list[tuple[str, str, str]], **kw: Any) -> MergedBook:
    bl = [Level(Decimal(p), Decimal(q), v) for p, q, v in bids]
    al = [Level(Decimal(p), Decimal(q), v) for p, q, v in asks]
    spread = al[0].price - bl[0].price if bl and al else None
    return MergedBook("BTC/USDT", 7, 42, 1, spread, bl, al, {"binance": "live", "bitstamp": "live"}, **kw)


def test_summary_cuts_keeps_order_and_converts_at_the_edge(challenge: SimpleNamespace) -> None:
    """Summary: top N in the contract's order, doubles of the exact values, spread best ask - best bid."""
    book = _book([("100.1", "2", "bitstamp"), ("100.1", "0.5", "binance"), ("99", "1", "binance")],
                 [("100.3", "0.1", "binance"), ("100.4", "3", "bitstamp")])
    s = convert.summary(challenge.pb, book, 2)
    assert [(lv.exchange, lv.price, lv.amount) for lv in s.bids] == [("bitstamp", 100.1, 2.0), ("binance", 100.1, 0.5)]
    assert [(lv.exchange, lv.price, lv.amount) for lv in s.asks] == [("binance", 100.3, 0.1), ("bitstamp", 100.4, 3.0)]
    assert s.spread == float(Decimal("0.2"))


def test_summary_of_an_empty_side_is_an_empty_list_and_spread_zero(challenge: SimpleNamespace) -> None:
    """An empty side gives an empty list and spread 0 (the other side is still sent)."""
    ob = challenge.pb
    s = convert.summary(ob, _book([], [("100.3", "0.1", "binance")]), 10)
    assert list(s.bids) == [] and len(s.asks) == 1 and s.spread == 0.0
    s = convert.summary(ob, _book([], []), 10)
    assert list(s.bids) == [] and list(s.asks) == [] and s.spread == 0.0
    crossed = convert.summary(ob, _book([("100.02", "1", "bitstamp")], [("100", "0.5", "binance")]), 10)
    assert crossed.spread == float(Decimal("-0.02"))


def test_exact_book_keeps_decimal_text_and_depletion() -> None:
    """bookmux.Book: canonical decimal text, statuses, epoch/seq, depletion with absent vwap."""
    bm = stubs.load("bookmux").messages
    d = Decimal
    depl = {"buy": {d(1): DepletionSummary(d(1), d("100.35"), d("100.4"), d("4.98"), 2, False)},
            "sell": {d(1): DepletionSummary(d(0), None, None, None, 0, True)}}
    book = _book([("100.10", "2", "bitstamp")], [("100.3", "0.000000001", "binance")], depletion=depl,
                 venue_ts={"binance": VenueTimes(5, 6, 7)})
    m = bm.Book.FromString(convert.exact_book(bm, book, 0).SerializeToString())
    assert (m.symbol, m.epoch, m.seq, m.spread) == ("BTC/USDT", 7, 42, "0.2")
    assert [(lv.price, lv.amount, lv.venue) for lv in m.bids] == [("100.1", "2", "bitstamp")]
    assert [(lv.price, lv.amount, lv.venue) for lv in m.asks] == [("100.3", "0.000000001", "binance")]
    assert dict(m.venues) == {"binance": "live", "bitstamp": "live"}
    assert [(f.size, f.filled, f.vwap, f.worst, f.levels, f.partial) for f in m.depletion.buy] == [
        ("1", "1", "100.35", "100.4", 2, False)]
    sell = m.depletion.sell[0]
    assert (sell.HasField("vwap"), sell.filled, sell.partial) == (False, "0", True)
    assert (m.venue_ts["binance"].ets, m.venue_ts["binance"].heard) == (5, 7)
    empty = bm.Book.FromString(convert.exact_book(bm, _book([], []), 0).SerializeToString())
    assert not empty.HasField("spread") and not empty.HasField("depletion")


def test_mailbox_keeps_only_the_newest() -> None:
    """put never blocks and replaces an untaken item (counted); get returns the newest."""
    async def scenario() -> tuple[Any, ...]:
        hub = Hub()
        hub.publish("X", 1)
        box = hub.join("X")                 # a late joiner gets the newest at once
        first = await box.get()
        for i in range(2, 100):
            hub.publish("X", i)
        newest = await box.get()
        waiter = asyncio.ensure_future(box.get())
        await asyncio.sleep(0)
        pending = not waiter.done()
        hub.publish("X", 100)
        got = await waiter
        hub.leave("X", box)
        return first, newest, box.skipped, pending, got, hub.clients()

    assert asyncio.run(scenario()) == (1, 99, 97, True, 100, {})


def test_mailbox_get_can_be_cancelled() -> None:
    """A stream cancelled while waiting leaves no waiter behind (the disconnect path)."""
    async def scenario() -> bool:
        box = Mailbox()
        t = asyncio.ensure_future(box.get())
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        box.put(1)
        return t.cancelled() and await box.get() == 1

    assert asyncio.run(scenario())


def test_config_gateway_grpc_table(tmp_path: Path) -> None:
    """[gateway_grpc] defaults, overrides, errors naming the key; supervisord program only when enabled."""
    cfg = config.load(REPO / "deploy" / "demo.toml")
    gw = cfg.gateway_grpc
    assert (gw.enabled, gw.bind, gw.port, gw.symbol, gw.levels) == (False, "127.0.0.1", 50051, "BTC/USDT", 10)
    for sets, key in ((["gateway_grpc.port=70000"], "gateway_grpc.port"),
                      (["gateway_grpc.port=50052"], "gateway_grpc.port"),
                      (['gateway_grpc.symbol="DOGE/USDT"', "gateway_grpc.enabled=true"], "gateway_grpc.symbol"),
                      (['gateway_grpc.symbol="BTCUSDT"'], "gateway_grpc.symbol"),
                      (["gateway_grpc.levels=0"], "gateway_grpc.levels"),
                      (['gateway_grpc.enabled="yes"'], "gateway_grpc.enabled"),
                      (["gateway_grpc.colour=1"], "gateway_grpc")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config.load(REPO / "deploy" / "demo.toml", sets=sets)
    on = config.load(REPO / "deploy" / "demo.toml",
                     sets=["gateway_grpc.enabled=true", 'gateway_grpc.symbol="eth/usdt"'])
    assert on.gateway_grpc.symbol == "ETH/USDT"
    text = supervisor.render(on, flags=["--config", "x.toml"], demo=True, python="py")
    assert "[program:gateway_grpc]\ncommand=py -m services.gateway_grpc --config x.toml\n" in text
    assert ("programs=simulator,feed_binance,feed_bitstamp,feed_kraken,feed_coinbase,feed_gemini,aggregator,"
            "publisher,gateway_grpc\n") in text
    assert "gateway_grpc" not in supervisor.render(cfg, flags=[], demo=True, python="py")


def test_main_flags_map_to_the_table() -> None:
    """--base_asset/--quote_asset/--symbol/--levels/--port become [gateway_grpc] overrides."""
    from services.gateway_grpc.__main__ import overrides, parser

    a = parser().parse_args(["--base_asset", "BTC", "--quote_asset", "USDT", "--levels", "10", "--port", "50051"])
    assert overrides(a) == ["gateway_grpc.symbol='BTC/USDT'", "gateway_grpc.levels=10", "gateway_grpc.port=50051"]
    with pytest.raises(ConfigError, match="--quote_asset"):
        overrides(parser().parse_args(["--base_asset", "BTC"]))
    with pytest.raises(ConfigError, match="disagree"):
        overrides(parser().parse_args(["--symbol", "ETH/USDT", "--base_asset", "BTC", "--quote_asset", "USDT"]))


def test_server_in_process_empty_side_limit_and_release(tmp_path: Path, challenge: SimpleNamespace) -> None:
    """The gateway in-process, books injected into its hub: an empty side goes out as an empty list
    with spread 0; a stream beyond max_clients is RESOURCE_EXHAUSTED; a cancelled stream is freed."""
    from services.gateway_grpc.server import Gateway

    path = tmp_path / "bookmux.toml"
    write_config(path, symbols=["BTC/USDT"], venues={"alpha": {}})
    port = free_port()
    cfg = config.load(path, sets=[f"gateway_grpc.port={port}", "gateway_grpc.max_clients=2"])

    async def scenario() -> tuple[Any, ...]:
        # No publisher there: the books come from the test. The challenge's own modules are this
        # process's package orderbook (the test above shows they are the repo's proto).
        gw = Gateway(cfg, endpoint=f"tcp://127.0.0.1:{free_port()}",
                     orderbook=stubs.Stubs(challenge.pb, challenge.grpc))
        ready = asyncio.Event()
        served = asyncio.ensure_future(gw.run(on_ready=lambda _port: ready.set()))
        await asyncio.wait_for(ready.wait(), 30)
        gw.hub.publish("BTC/USDT", _book([], [("100.3", "0.1", "binance")]))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = challenge.grpc.OrderbookAggregatorStub(ch)
            first, second = stub.BookSummary(challenge.pb.Empty()), stub.BookSummary(challenge.pb.Empty())
            got = await asyncio.wait_for(first.read(), 30)
            await asyncio.wait_for(second.read(), 30)
            third = stub.BookSummary(challenge.pb.Empty())
            try:
                await asyncio.wait_for(third.read(), 30)
                refused = None
            except grpc.aio.AioRpcError as e:
                refused = e.code()
            first.cancel()
            t0 = time.monotonic()
            while len(gw.open) != 1 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.05)
            left = len(gw.open)
            second.cancel()
        gw.stop()
        return got, refused, left, await asyncio.wait_for(served, 30)

    got, refused, left, status = asyncio.run(scenario())
    assert (list(got.bids), got.spread, [(lv.exchange, lv.price, lv.amount) for lv in got.asks]) == (
        [], 0.0, [("binance", 100.3, 0.1)])
    assert (refused, left, status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 1, 0)


# --- over the real pipeline ---------------------------------------------------------------------


class Recorder(threading.Thread):
    """A plain ZeroMQ subscriber of one symbol in a thread: (monotonic receive time, snapshot)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, symbol: str) -> None:
        super().__init__(daemon=True)
        self.ctx, self.endpoint, self.topic = ctx, endpoint, f"book.{symbol}".encode()
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, self.topic)
        s.connect(self.endpoint)
        try:
            while not self.halt.is_set():
                if s.poll(100):
                    topic, payload = s.recv_multipart()
                    if topic == self.topic:
                        self.got.append((time.monotonic(), msgpack.unpackb(payload, raw=False)))
        finally:
            s.close(0)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


class System:
    def __init__(self, tmp: Path) -> None:
        bin_port, bts_port, ctl_port = free_port(), free_port(), free_port()
        self.grpc_port = free_port()
        extra = (f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {ctl_port}\nseed = 5\nrate = 20.0\n\n'
                 f'[simulator.venues.binance]\nkind = "binance"\nport = {bin_port}\n\n'
                 f'[simulator.venues.bitstamp]\nkind = "bitstamp"\nport = {bts_port}\n\n'
                 f'[gateway_grpc]\nport = {self.grpc_port}\nsymbol = "BTC/USDT"\nlevels = {N}\n')
        self.cfg = tmp / "bookmux.toml"
        self.ep = write_config(
            self.cfg, symbols=SYMS, levels=PUB_LEVELS, down_after=2.0, extra=extra,
            depletion={"BTC/USDT": ["1", "5"]},
            venues={"binance": {"kind": "binance", "ws_url": f"ws://127.0.0.1:{bin_port}",
                                "rest_url": f"http://127.0.0.1:{bin_port}", "stale_after": 5.0},
                    "bitstamp": {"kind": "bitstamp", "ws_url": f"ws://127.0.0.1:{bts_port}",
                                 "rest_url": f"http://127.0.0.1:{bts_port}/api/v2", "stale_after": 5.0}})
        self.pub = f"tcp://127.0.0.1:{self.ep['pub_port']}"
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.sim = SimControl(ctl_port)
        self.procs = Procs(tmp)
        self.ctx = zmq.Context()

    def start(self) -> None:
        c = str(self.cfg)
        self.procs.start("simulator", "services.simulator", "--config", c)
        wait_until(self.sim.up, timeout=30, what="simulator up")
        self.procs.start("feed_binance", "services.feed_binance", "--venue", "binance", "--config", c)
        self.procs.start("feed_bitstamp", "services.feed_bitstamp", "--venue", "bitstamp", "--config", c)
        self.procs.start("aggregator", "services.aggregator", "--config", c)
        self.procs.start("publisher", "services.publisher", "--config", c)
        # The original's command line; the port and the rest come from the config.
        self.procs.start("gateway_grpc", "services.gateway_grpc", "--config", c, "--base_asset", "BTC",
                         "--quote_asset", "USDT", "--levels", str(N))

    def info(self) -> Any:
        bm = stubs.load("bookmux")
        with grpc.insecure_channel(self.target) as ch:
            return bm.services.BooksStub(ch).Info(bm.messages.InfoRequest(), timeout=10)

    def all_live(self, symbol: str) -> bool:
        rec = Recorder(self.ctx, self.pub, symbol)
        rec.start()
        try:
            wait_until(lambda: any(set(m["venues"].values()) == {"live"} and m["bids"] and m["asks"]
                                   for _, m in rec.got), timeout=60, what=f"{symbol} live on both venues")
        finally:
            rec.stop()
        return True

    def close(self) -> None:
        self.procs.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = System(tmp_path_factory.mktemp("gateway"))
    try:
        s.start()
        for sym in SYMS:
            s.all_live(sym)

        def serving() -> bool:
            try:
                return s.info().snapshots > 0
            except grpc.RpcError:
                return False
        wait_until(serving, timeout=30, what="the gateway serving books")
        yield s
    except BaseException:
        for name in ("gateway_grpc", "publisher", "aggregator"):
            if name in s.procs.procs:
                print(f"--- {name} log ---\n{s.procs.log(name)[-3000:]}")
        raise
    finally:
        s.close()


Doubles = tuple[float, list[tuple[str, float, float]], list[tuple[str, float, float]]]


def as_doubles(m: dict[str, Any], n: int) -> Doubles:
    """A ZeroMQ snapshot as the challenge's Summary would carry it (exact text -> nearest double)."""
    bids = [(v, float(Decimal(p)), float(Decimal(q))) for p, q, v in m["bids"][:n]]
    asks = [(v, float(Decimal(p)), float(Decimal(q))) for p, q, v in m["asks"][:n]]
    spread = float(Decimal(m["spread"])) if bids and asks and m["spread"] is not None else 0.0
    return spread, bids, asks


def summary_tuple(s: Any) -> Doubles:
    return (s.spread, [(lv.exchange, lv.price, lv.amount) for lv in s.bids],
            [(lv.exchange, lv.price, lv.amount) for lv in s.asks])


def test_challenge_client_gets_recent_zmq_snapshots_in_order(system: System, challenge: SimpleNamespace) -> None:
    """Each Summary equals (as doubles) a ZeroMQ snapshot of BTC/USDT received at most 2 s before
    it, the matched snapshots in publication order; levels best first, at equal price larger first."""
    rec = Recorder(system.ctx, system.pub, "BTC/USDT")
    rec.start()
    try:
        wait_until(lambda: len(rec.got) > 0, timeout=30, what="a ZeroMQ snapshot")
        got: list[tuple[float, Any]] = []
        with grpc.insecure_channel(system.target) as ch:
            call = challenge.grpc.OrderbookAggregatorStub(ch).BookSummary(challenge.pb.Empty(), timeout=60)
            for s in call:
                got.append((time.monotonic(), s))
                if len(got) == 40:
                    break
            call.cancel()
        time.sleep(0.2)
    finally:
        rec.stop()
    zs = [(t, as_doubles(m, N)) for t, m in rec.got]
    j = 0
    for t, s in got:
        want = summary_tuple(s)
        assert len(s.bids) == N and len(s.asks) == N
        for side, sign in ((s.bids, -1), (s.asks, 1)):
            keys = [(sign * lv.price, -lv.amount) for lv in side]
            assert keys == sorted(keys)
        # The greedy earliest match keeps the order; the test's own subscriber may stamp its copy a
        # little after the gateway's (the same publication, two subscribers), hence the 0.5 s slack.
        while j < len(zs) and not (zs[j][1] == want and t - 2.0 <= zs[j][0] <= t + 0.5):
            j += 1
        assert j < len(zs), f"Summary at {t:.3f} matches no ZeroMQ snapshot of the last 2 s in order: {want}"
    assert system.info().malformed == 0


def test_exact_service_matches_zmq_by_seq(system: System) -> None:
    """bookmux.Books/Subscribe returns the published levels as the same decimal strings, the
    same spread, statuses, freshness and depletion, for the snapshot with the same epoch and seq."""
    bm = stubs.load("bookmux")
    rec = Recorder(system.ctx, system.pub, "BTC/USDT")
    rec.start()
    try:
        wait_until(lambda: len(rec.got) > 0, timeout=30, what="a ZeroMQ snapshot")
        got = []
        with grpc.insecure_channel(system.target) as ch:
            call = bm.services.BooksStub(ch).Subscribe(bm.messages.SubscribeRequest(symbol="BTC/USDT"), timeout=60)
            for b in call:
                got.append(b)
                if len(got) == 20:
                    break
            call.cancel()
        time.sleep(0.5)
    finally:
        rec.stop()
    by_seq = {(m["epoch"], m["seq"]): m for _, m in rec.got}
    matched = 0
    for b in got:
        m = by_seq.get((b.epoch, b.seq))
        if m is None:     # the first one may predate our ZeroMQ subscription
            continue
        matched += 1
        assert [[lv.price, lv.amount, lv.venue] for lv in b.bids] == m["bids"]
        assert [[lv.price, lv.amount, lv.venue] for lv in b.asks] == m["asks"]
        assert (b.spread if b.HasField("spread") else None) == m["spread"]
        assert dict(b.venues) == m["venues"] and b.ts == m["ts"] and b.symbol == "BTC/USDT"
        assert {v: [t.ets, t.rts, t.heard] for v, t in b.venue_ts.items()} == {
            v: [t["ets"], t["rts"], t["heard"]] for v, t in m["venue_ts"].items()}
        for side in ("buy", "sell"):
            fills = {f.size: f for f in getattr(b.depletion, side)}
            assert sorted(fills) == sorted(m["depletion"][side])
            for size, d in m["depletion"][side].items():
                f = fills[size]
                assert (f.filled, f.vwap if f.HasField("vwap") else None, f.levels, f.partial) == (
                    d["filled"], d["vwap"], d["levels"], d["partial"])
    assert matched >= len(got) - 1
    seqs = [b.seq for b in got]
    assert seqs == sorted(seqs)


def test_exact_service_other_symbol_and_bad_symbols(system: System) -> None:
    """Any carried symbol per call; a malformed one is INVALID_ARGUMENT, an unknown one NOT_FOUND."""
    bm = stubs.load("bookmux")
    with grpc.insecure_channel(system.target) as ch:
        stub = bm.services.BooksStub(ch)
        call = stub.Subscribe(bm.messages.SubscribeRequest(symbol="eth/usdt", levels=3), timeout=30)
        b = next(iter(call))
        call.cancel()
        assert b.symbol == "ETH/USDT" and 0 < len(b.bids) <= 3 and 0 < len(b.asks) <= 3
        for sym, code in (("ETHUSDT", grpc.StatusCode.INVALID_ARGUMENT), ("DOGE/USDT", grpc.StatusCode.NOT_FOUND)):
            with pytest.raises(grpc.RpcError) as e:
                next(iter(stub.Subscribe(bm.messages.SubscribeRequest(symbol=sym), timeout=10)))
            assert e.value.code() == code


def test_fifty_clients_and_one_that_never_reads(system: System, challenge: SimpleNamespace) -> None:
    """50 challenge clients keep receiving while one client never reads (the gateway skips books
    for it only); when they all disconnect every stream is freed."""
    bm = stubs.load("bookmux")
    # The stalled client: a small receive window so it fills quickly; it never calls read().
    stalled_opts = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024),
                    ("grpc.use_local_subchannel_pool", 1)]

    async def scenario() -> tuple[list[int], list[int], int]:
        counts = [0] * 50
        stalled_ch = grpc.aio.insecure_channel(system.target, options=stalled_opts)
        stalled = bm.services.BooksStub(stalled_ch).Subscribe(bm.messages.SubscribeRequest(symbol="BTC/USDT"))
        channels = [grpc.aio.insecure_channel(system.target, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(50)]

        async def client(i: int) -> None:
            call = challenge.grpc.OrderbookAggregatorStub(channels[i]).BookSummary(challenge.pb.Empty())
            async for s in call:
                assert len(s.bids) == N
                counts[i] += 1

        tasks = [asyncio.ensure_future(client(i)) for i in range(50)]

        async def info() -> Any:
            async with grpc.aio.insecure_channel(system.target) as ch:
                return await bm.services.BooksStub(ch).Info(bm.messages.InfoRequest(), timeout=10)

        async def wait_for(pred: Any, what: str, timeout: float = 60) -> Any:
            t0 = time.monotonic()
            while True:
                inf = await info()
                if pred(inf):
                    return inf
                assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}: {inf}"
                await asyncio.sleep(0.25)

        def stalled_stream(inf: Any) -> Any:
            return next((st for st in inf.streams if st.method == "/bookmux.Books/Subscribe"), None)

        try:
            await wait_for(lambda inf: inf.clients == 51, "51 open streams")
            # Stalled: the gateway has replaced books this client never took, many times over.
            inf = await wait_for(lambda inf: (st := stalled_stream(inf)) is not None and st.skipped >= 50,
                                 "the never-reading client to be stalled")
            sent_when_stalled = stalled_stream(inf).sent
            before = list(counts)
            t0 = time.monotonic()
            while min(c - b for c, b in zip(counts, before)) < 20:
                assert time.monotonic() - t0 < 60, f"readers stopped receiving: {counts} (before {before})"
                await asyncio.sleep(0.25)
            stalled_sent = stalled_stream(await info()).sent
            assert stalled_sent <= sent_when_stalled + 1
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stalled.cancel()
            for ch in [*channels, stalled_ch]:
                await ch.close()
        freed = await wait_for(lambda inf: inf.clients == 0 and not inf.streams, "every stream freed")
        return before, counts, freed.clients

    before, counts, left = asyncio.run(scenario())
    assert min(c - b for c, b in zip(counts, before)) >= 20
    assert left == 0


KILLED_CLIENT = """
import sys, time, grpc
sys.path.append(sys.argv[1])
from challenge_client import orderbook_pb2, orderbook_pb2_grpc
channel = grpc.insecure_channel(sys.argv[2])
call = orderbook_pb2_grpc.OrderbookAggregatorStub(channel).BookSummary(orderbook_pb2.Empty())
next(call)
print("reading no more", flush=True)
time.sleep(600)
"""


def test_killed_client_frees_its_stream(system: System, challenge: SimpleNamespace) -> None:
    """A challenge client process killed with SIGKILL mid-stream (never closing) is freed by the gateway."""
    import subprocess

    stubs_dir = str(Path(challenge.pb.__file__).parent.parent)
    p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, stubs_dir, system.target], stdout=subprocess.PIPE,
                         start_new_session=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"reading no more\n"
        wait_until(lambda: system.info().clients == 1, timeout=30, what="the client's stream open")
    finally:
        p.kill()
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()
    wait_until(lambda: system.info().clients == 0, timeout=30, what="the killed client's stream freed")
    assert list(system.info().streams) == []
