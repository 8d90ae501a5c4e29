"""The shared feed runner over real sockets against a tiny fake venue written here (websockets
for the stream, the same port answering REST): sync and publish, gap resync, pair check,
snapshot service, backoff that resets only after a synced book, staleness, rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
import zmq
import zmq.asyncio
from websockets.asyncio.server import ServerConnection, serve

from common.config import VenueConfig
from common.feed.runner import FeedRunner
from common.ports import free_port
from common.schema import (
    DELTA,
    DOWN,
    SNAP,
    STALE,
    SYNCING,
    BookMsg,
    HeartbeatMsg,
    StatusMsg,
    decode_feed,
    decode_feed_payload,
    encode_snapshot_request,
    unpack,
)
from services.feed_binance.spec import SPEC as BINANCE
from services.feed_bitstamp.spec import SPEC as BITSTAMP

pytestmark = pytest.mark.timeout(30)


EXCHANGE_INFO = json.dumps({"symbols": [
    {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
    {"symbol": "OLDUSDT", "status": "BREAK", "baseAsset": "OLD", "quoteAsset": "USDT"}]})


def depth(e_first: int, e_last: int, bids: list, asks: list) -> str:
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1700000000000, "s": "BTCUSDT", "U": e_first, "u": e_last,
        "b": bids, "a": asks}})


class FakeVenue:
    """REST routes (path -> callable returning (status, body, headers)) and a WebSocket handler
    on one loopback port. Counts connections and REST hits per path."""

    def __init__(self, ws: Callable[[ServerConnection, FakeVenue], Awaitable[None]]) -> None:
        self.ws = ws
        self.routes: dict[str, Callable[[], tuple[int, str, dict[str, str]]]] = {}
        self.hits: dict[str, int] = {}
        self.connections = 0
        self.snapshot_served = asyncio.Event()
        # Nothing is answered before ``gate`` opens (the test opens it once its SUB receives), so
        # no message is lost to the PUB/SUB slow-joiner; ``depth_gate`` holds snapshots back.
        self.gate = asyncio.Event()
        self.depth_gate = asyncio.Event()
        self.depth_gate.set()
        self.port = 0

    async def _http(self, connection: ServerConnection, request: Any) -> Any:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        await self.gate.wait()
        path = request.path.split("?")[0]
        if "depth" in path or "order_book" in path:
            await self.depth_gate.wait()
        self.hits[path] = self.hits.get(path, 0) + 1
        route = self.routes.get(path)
        if route is None:
            return connection.respond(404, "not found")
        status, body, headers = route()
        resp = connection.respond(status, body)
        for k, v in headers.items():
            resp.headers[k] = v
        if status == 200 and ("depth" in path or "order_book" in path):
            asyncio.get_running_loop().call_soon(self.snapshot_served.set)
        return resp

    async def _handler(self, conn: ServerConnection) -> None:
        await self.gate.wait()
        self.connections += 1
        await self.ws(conn, self)

    @contextlib.asynccontextmanager
    async def running(self):  # type: ignore[no-untyped-def]
        async with serve(self._handler, "127.0.0.1", 0, process_request=self._http) as server:
            self.port = server.sockets[0].getsockname()[1] if hasattr(server, "sockets") else 0
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


def venue_cfg(kind: str, port: int, symbols: tuple[str, ...], stale_after: float = 5.0,
              **options: Any) -> VenueConfig:
    rest = f"http://127.0.0.1:{port}" + ("/api/v2" if kind == "bitstamp" else "")
    return VenueConfig(id=f"fake_{kind}", kind=kind, enabled=True, symbols=symbols,
                       ws_url=f"ws://127.0.0.1:{port}", rest_url=rest,
                       pub=f"tcp://127.0.0.1:{free_port()}", ctl=f"tcp://127.0.0.1:{free_port()}",
                       stale_after=stale_after, depth=100, taker_fee=Decimal(0), cpu=None,
                       options={"backoff_initial": 0.01, "backoff_cap": 0.04, "backoff_jitter": 0.0,
                                **options})


class Bus:
    """A SUB on the feed's PUB, collecting decoded messages."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(endpoint)
        self.msgs: list[Any] = []

    async def until(self, pred: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        async def loop() -> None:
            while not pred(self.msgs):
                self.msgs.append(decode_feed(await self.sub.recv_multipart()))
        await asyncio.wait_for(loop(), timeout)
        return self.msgs

    def book(self, symbol: str) -> list[Any]:
        return [m for m in self.msgs if not isinstance(m, HeartbeatMsg) and m.symbol == symbol]

    def close(self) -> None:
        self.sub.close(linger=0)
        self.ctx.term()


async def start(spec: Any, cfg: VenueConfig, fake: FakeVenue) -> tuple[FeedRunner, asyncio.Task[None], Bus]:
    bus = Bus(cfg.pub)
    runner = FeedRunner(spec, cfg)
    task = asyncio.create_task(runner.run())
    await bus.until(lambda ms: bool(ms))
    bus.msgs.clear()
    fake.gate.set()
    return runner, task, bus


async def finish(runner: FeedRunner, task: asyncio.Task[None], bus: Bus) -> None:
    runner.stop()
    await asyncio.wait_for(task, 5)
    bus.close()


async def served_or_closed(conn: ServerConnection, v: FakeVenue) -> bool:
    """Wait until a snapshot was served (True) or the connection closed (False), so a handler
    never outlives a failed test and hangs the server's shutdown."""
    served = asyncio.ensure_future(v.snapshot_served.wait())
    closed = asyncio.ensure_future(conn.wait_closed())
    done, pending = await asyncio.wait({served, closed}, return_when=asyncio.FIRST_COMPLETED)
    for f in pending:
        f.cancel()
    return served in done


async def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


# --- Binance-like happy path, gap, malformed, pair check, snapshot service ------------------


def test_sync_publish_gap_resync_pair_check_and_snapshot_service() -> None:
    """Buffer -> snapshot -> SNAP; live DELTAs with absolute sizes; a gap resyncs that symbol only
    with a new SNAP; seq is +1 per message of the stream; unlisted symbols are down; the ROUTER
    answers with the current SNAP and seq, or the status."""
    book_id = {"id": 100}

    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        await conn.send(depth(99, 100, [["10.0", "1"]], []))        # stale: u <= lastUpdateId
        await conn.send(depth(101, 102, [["10.5", "2"]], []))       # straddles 101: applied at sync
        await asyncio.sleep(0.1)
        v.depth_gate.set()
        await v.snapshot_served.wait()
        await asyncio.sleep(0.2)
        await conn.send(depth(103, 103, [["10.5", "0"]], [["11.0", "3"]]))
        await conn.send('{"stream":"btcusdt@bookTicker","data":{"u":1}}')
        await asyncio.sleep(0.1)
        book_id["id"] = 120
        v.snapshot_served.clear()
        await conn.send(depth(110, 111, [["9.0", "1"]], []))        # gap: 104..109 missing
        await v.snapshot_served.wait()
        await asyncio.sleep(0.1)
        await conn.send(depth(121, 121, [], [["11.0", "0"], ["12.0", "1"]]))
        await conn.wait_closed()

    def snapshot() -> tuple[int, str, dict[str, str]]:
        return 200, json.dumps({"lastUpdateId": book_id["id"], "bids": [["10.0", "1"], ["9.5", "4"]],
                                "asks": [["11.0", "5"]]}), {}

    async def scenario() -> None:
        fake = FakeVenue(ws)
        fake.depth_gate.clear()
        fake.routes = {"/api/v3/exchangeInfo": lambda: (200, EXCHANGE_INFO, {}), "/api/v3/depth": snapshot}
        async with fake.running():
            cfg = venue_cfg("binance", fake.port, ("BTC/USDT", "FOO/BAR", "OLD/USDT"))
            runner, task, bus = await start(BINANCE, cfg, fake)
            try:
                await bus.until(lambda ms: sum(isinstance(m, BookMsg) and m.kind == SNAP
                                                      for m in ms) >= 2
                                       and any(isinstance(m, BookMsg) and m.seq and m.asks ==
                                               [(Decimal("11.0"), Decimal(0)), (Decimal("12.0"), Decimal(1))]
                                               for m in ms))
                btc = bus.book("BTC/USDT")
                first_snap = next(i for i, m in enumerate(btc) if isinstance(m, BookMsg))
                assert first_snap == 0 or btc[first_snap - 1].status == SYNCING
                tail = btc[first_snap:]
                kinds = [(m.kind if isinstance(m, BookMsg) else m.status) for m in tail]
                assert kinds == [SNAP, DELTA, SYNCING, SNAP, DELTA]
                assert [m.seq for m in tail] == list(range(tail[0].seq, tail[0].seq + 5))
                s1, d1, st, s2, d2 = tail
                assert s1.bids == [(Decimal("10.5"), Decimal(2)), (Decimal("10.0"), Decimal(1)),
                                   (Decimal("9.5"), Decimal(4))]
                assert s1.asks == [(Decimal("11.0"), Decimal(5))]
                assert d1.bids == [(Decimal("10.5"), Decimal(0))] and d1.asks == [(Decimal("11.0"), Decimal(3))]
                assert d1.ets == 1700000000000 * 10**6 and d1.rts > 0 and d1.sess == runner.sess
                assert "gap" in st.reason
                assert runner.counters["gaps"] == 1 and runner.counters["dropped_stale"] >= 0
                # The snapshot service: current SNAP with the current seq; statuses for the others.
                dealer = bus.ctx.socket(zmq.DEALER)
                dealer.connect(cfg.ctl)
                await dealer.send(encode_snapshot_request(["BTC/USDT", "FOO/BAR", "OLD/USDT", "X/Y"]))
                reply = [decode_feed_payload(unpack(f)) for f in await asyncio.wait_for(dealer.recv_multipart(), 5)]
                dealer.close(linger=0)
                assert isinstance(reply[0], BookMsg) and reply[0].kind == SNAP and reply[0].seq == d2.seq
                assert reply[0].bids == s2.bids and reply[0].asks == [(Decimal("12.0"), Decimal(1))]
                assert [(r.status, r.symbol) for r in reply[1:]] == [(DOWN, "FOO/BAR"), (DOWN, "OLD/USDT"),
                                                                     (DOWN, "X/Y")]
                assert "not listed" in reply[1].reason and "not trading" in reply[2].reason
                assert fake.connections == 1
                assert runner.connects == 1
                runner.stop()  # a stopping feed says so: every carried symbol goes down
                await bus.until(lambda ms: any(isinstance(m, StatusMsg) and m.symbol == "BTC/USDT" and
                                               m.status == DOWN and m.reason == "feed stopping" for m in ms))
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


def test_malformed_update_resyncs_that_symbol() -> None:
    """A depth event for a known symbol with a bad value is counted, dropped, and resyncs it."""
    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        await conn.send(depth(10, 10, [], []))   # buffered first: proves the snapshot current
        await v.snapshot_served.wait()
        await asyncio.sleep(0.2)
        v.snapshot_served.clear()
        await conn.send(depth(10, 10, [], []))
        await conn.send(depth(11, 11, [["10", "NaN"]], []))
        await conn.send("{not json")
        await asyncio.sleep(0.1)
        await conn.send(depth(10, 10, [], []))   # what the resync buffers before its snapshot
        await conn.wait_closed()

    async def scenario() -> None:
        fake = FakeVenue(ws)
        fake.routes = {"/api/v3/exchangeInfo": lambda: (200, EXCHANGE_INFO, {}),
                       "/api/v3/depth": lambda: (200, '{"lastUpdateId":10,"bids":[["1","1"]],"asks":[]}', {})}
        async with fake.running():
            runner, task, bus = await start(BINANCE, venue_cfg("binance", fake.port, ("BTC/USDT",)), fake)
            try:
                await bus.until(lambda ms: sum(isinstance(m, BookMsg) for m in ms) >= 2)
                assert runner.counters["malformed"] == 2 and runner.counters["resync_malformed"] == 1
                assert any(isinstance(m, StatusMsg) and m.status == SYNCING and "malformed" in m.reason
                           for m in bus.msgs)
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


# --- backoff: grows while nothing syncs, resets only after a synced book ----------------------


def test_accept_then_drop_backs_off_without_reset() -> None:
    """A server that accepts and drops at once: the delays slept are exactly 0.01, 0.02, 0.04, 0.04
    (cap), and the symbol is reported down."""
    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        await conn.close()

    async def scenario() -> None:
        fake = FakeVenue(ws)
        async with fake.running():
            cfg = venue_cfg("binance", fake.port, ("BTC/USDT",), pair_check=False)
            runner, task, bus = await start(BINANCE, cfg, fake)
            try:
                await wait_for(lambda: runner.connects >= 5)
                assert runner.delays_slept[:4] == [0.01, 0.02, 0.04, 0.04]
                assert runner.symbols["BTC/USDT"].status in (DOWN, SYNCING)
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


def test_backoff_resets_after_each_synced_book() -> None:
    """A server that drops every connection right after the book synced: every delay is the first."""
    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        await conn.send(depth(11, 11, [], []))
        await asyncio.sleep(0.05)      # the event is buffered before any snapshot is served
        v.depth_gate.set()
        if not await served_or_closed(conn, v):
            return                     # the feed left first: the test's assertions say why
        await asyncio.sleep(0.1)
        v.snapshot_served.clear()
        v.depth_gate.clear()
        await conn.close()

    async def scenario() -> None:
        fake = FakeVenue(ws)
        fake.depth_gate.clear()
        fake.routes = {"/api/v3/depth": lambda: (200, '{"lastUpdateId":12,"bids":[],"asks":[["2","1"]]}', {})}
        async with fake.running():
            cfg = venue_cfg("binance", fake.port, ("BTC/USDT",), pair_check=False)
            runner, task, bus = await start(BINANCE, cfg, fake)
            try:
                await wait_for(lambda: runner.connects >= 4)
                assert runner.delays_slept[:3] == [0.01, 0.01, 0.01]
                assert runner.counters["syncs"] >= 3
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


# --- liveness ----------------------------------------------------------------------------------


def silent_after_sync(v_snapshot: str) -> Callable[[ServerConnection, FakeVenue], Awaitable[None]]:
    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        await conn.send(depth(5, 5, [], []))   # one event, so the snapshot (lastUpdateId 5) is proven
        await conn.wait_closed()
    return ws


def test_silent_connection_goes_stale_then_reconnects() -> None:
    """No frame and no ping for stale_after -> status stale, then a new connection and a new SNAP."""
    async def scenario() -> None:
        fake = FakeVenue(silent_after_sync(""))
        fake.routes = {"/api/v3/depth": lambda: (200, '{"lastUpdateId":5,"bids":[["1","1"]],"asks":[]}', {})}
        async with fake.running():
            cfg = venue_cfg("binance", fake.port, ("BTC/USDT",), stale_after=0.4, ping_every=100.0,
                            pair_check=False)
            runner, task, bus = await start(BINANCE, cfg, fake)
            try:
                await bus.until(lambda ms: any(isinstance(m, StatusMsg) and m.status == STALE for m in ms)
                                and sum(isinstance(m, BookMsg) and m.kind == SNAP for m in ms) >= 2)
                assert fake.connections >= 2 and runner.counters["stale"] >= 1
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


def test_quiet_symbol_on_a_live_connection_is_not_stale() -> None:
    """No book frames for 3 x stale_after, but pongs keep coming: still live, one connection."""
    async def scenario() -> None:
        fake = FakeVenue(silent_after_sync(""))
        fake.routes = {"/api/v3/depth": lambda: (200, '{"lastUpdateId":5,"bids":[["1","1"]],"asks":[]}', {})}
        async with fake.running():
            cfg = venue_cfg("binance", fake.port, ("BTC/USDT",), stale_after=0.4, ping_every=0.1,
                            pair_check=False)
            runner, task, bus = await start(BINANCE, cfg, fake)
            try:
                await bus.until(lambda ms: any(isinstance(m, BookMsg) for m in ms))
                await asyncio.sleep(1.2)
                assert runner.symbols["BTC/USDT"].status == "live"
                assert fake.connections == 1 and runner.counters["stale"] == 0
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


# --- Bitstamp: subscribe, heartbeat, request_reconnect, 429 -----------------------------------


def test_bitstamp_subscribe_heartbeat_429_and_request_reconnect() -> None:
    """Subscribe frames are sent; bts:heartbeat is sent and answered; a 429 on the snapshot waits
    Retry-After; bts:request_reconnect reconnects and resyncs."""
    got: list[dict] = []
    snaps = {"n": 0}

    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        async def reader() -> None:
            async for text in conn:
                m = json.loads(text)
                got.append(m)
                if m.get("event") == "bts:heartbeat":
                    await conn.send('{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}')
        r = asyncio.create_task(reader())
        await asyncio.sleep(0.05)   # a diff older than the snapshot: what proves the snapshot current
        await conn.send('{"data":{"timestamp":"0","microtimestamp":"999","bids":[],"asks":[["1.7","1"]]},'
                        '"channel":"diff_order_book_btcusd","event":"data"}')
        await v.snapshot_served.wait()
        await asyncio.sleep(0.5)
        if v.connections == 1:
            v.snapshot_served.clear()
            await conn.send('{"event":"bts:request_reconnect","channel":"","data":""}')
        await conn.wait_closed()
        r.cancel()

    def snapshot() -> tuple[int, str, dict[str, str]]:
        snaps["n"] += 1
        if snaps["n"] == 1:
            return 429, "slow down", {"Retry-After": "0.2"}
        return 200, '{"timestamp":"1","microtimestamp":"1000","bids":[["1.5","2"]],"asks":[["1.6","1"]]}', {}

    async def scenario() -> None:
        fake = FakeVenue(ws)
        fake.routes = {"/api/v2/order_book/btcusd/": snapshot,
                       "/api/v2/trading-pairs-info/": lambda: (
                           200, '[{"name":"BTC/USD","url_symbol":"btcusd","trading":"Enabled"}]', {})}
        async with fake.running():
            cfg = venue_cfg("bitstamp", fake.port, ("BTC/USD",), heartbeat_every=0.1)
            runner, task, bus = await start(BITSTAMP, cfg, fake)
            try:
                await bus.until(lambda ms: sum(isinstance(m, BookMsg) and m.kind == SNAP for m in ms) >= 2)
                assert {"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusd"}} in got
                assert {"event": "bts:heartbeat"} in got and runner.counters["heartbeat_replies"] >= 1
                assert runner.counters["rest_rate_limited"] == 1
                assert runner.counters["venue_reconnect_requests"] == 1 and fake.connections == 2
                assert any(isinstance(m, StatusMsg) and m.status == DOWN and "reconnect" in m.reason
                           for m in bus.msgs)
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())
