"""The Coinbase feed over real sockets: FeedRunner with each Coinbase spec against a loopback
venue written here that plays the real recording (Exchange) or its Advanced Trade transcoding,
with the pair check over HTTP; a subscriber rebuilds the books from the PUB and compares them
with the dict reference. Advanced Trade also gets a multi-MB snapshot and a sequence_num jump."""

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
from common.feed.spec import FeedSpec
from common.ports import free_port
from common.schema import HeartbeatMsg, decode_feed
from services.feed_coinbase import spec_advanced, spec_exchange
from tests.replay_util import read_http, recorded
from tests.test_feed_coinbase import PRODUCTS, BusBooks, RefBooks, advanced_snapshots, recording, to_advanced

pytestmark = pytest.mark.timeout(120)

SYMBOLS = tuple(p.replace("-", "/") for p in PRODUCTS)


class Venue:
    """One loopback port: REST routes by path, and a WebSocket handler per connection."""

    def __init__(self, ws: Callable[[ServerConnection, int], Awaitable[None]],
                 routes: dict[str, str]) -> None:
        self.ws = ws
        self.routes = routes
        self.queries: list[str] = []
        self.connections = 0
        self.done = asyncio.Event()
        # Nothing is sent before the subscriber is connected (no loss to the PUB/SUB slow joiner).
        self.gate = asyncio.Event()
        self.port = 0

    async def _http(self, connection: ServerConnection, request: Any) -> Any:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        await self.gate.wait()
        path, _, query = request.path.partition("?")
        self.queries.append(query)
        body = self.routes.get(path)
        return connection.respond(200, body) if body is not None else connection.respond(404, "not found")

    async def _handler(self, conn: ServerConnection) -> None:
        await self.gate.wait()
        self.connections += 1
        await self.ws(conn, self.connections)

    @contextlib.asynccontextmanager
    async def running(self):  # type: ignore[no-untyped-def]
        async with serve(self._handler, "127.0.0.1", 0, process_request=self._http, max_size=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


def venue_cfg(port: int, symbols: tuple[str, ...], **options: Any) -> VenueConfig:
    return VenueConfig(id="coinbase", kind="coinbase", enabled=True, symbols=symbols,
                       ws_url=f"ws://127.0.0.1:{port}", rest_url=f"http://127.0.0.1:{port}",
                       pub=f"tcp://127.0.0.1:{free_port()}", ctl=f"tcp://127.0.0.1:{free_port()}",
                       stale_after=10.0, depth=1000, taker_fee=Decimal(0), cpu=None,
                       options={"backoff_initial": 0.01, "backoff_cap": 0.04, "backoff_jitter": 0.0, **options})


async def follow(spec: FeedSpec, cfg: VenueConfig, venue: Venue,
                 done: Callable[[BusBooks], bool]) -> tuple[FeedRunner, BusBooks]:
    """Run the feed until ``done(books)`` holds at a bus heartbeat after the venue finished."""
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(cfg.pub)
    runner = FeedRunner(spec, cfg)
    task = asyncio.create_task(runner.run())
    books = BusBooks()
    try:
        async def loop() -> None:
            while True:
                msg = decode_feed(await sub.recv_multipart())
                venue.gate.set()
                if isinstance(msg, HeartbeatMsg):
                    if venue.done.is_set() and done(books):
                        return
                    continue
                books.feed([msg])
        await asyncio.wait_for(loop(), 90)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
        sub.close(linger=0)
        ctx.term()
    return runner, books


def test_exchange_feed_over_sockets_publishes_the_reference_books() -> None:
    """Exchange level2_batch: the pair check reads /products, one subscribe names every product
    and both channels, the recording streams in; the published books end equal to the reference."""
    texts = recording()
    ref = RefBooks()
    for m in map(json.loads, texts):
        ref.feed(m)
    (products,) = [h.body for h in read_http(recorded("coinbase") / "COINBASE.0") if h.url.endswith("/products")]
    got: list[Any] = []

    async def ws(conn: ServerConnection, n: int) -> None:
        got.append(json.loads(await conn.recv()))
        for t in texts:
            await conn.send(t)
        venue.done.set()
        await conn.wait_closed()

    venue = Venue(ws, {"/products": products})

    async def scenario() -> tuple[FeedRunner, BusBooks]:
        async with venue.running():
            return await follow(spec_exchange.SPEC, venue_cfg(venue.port, SYMBOLS), venue,
                                lambda b: all(b.live.get(s) and b.levels(s) == ref.levels(s.replace("/", "-"))
                                              for s in SYMBOLS))

    runner, books = asyncio.run(scenario())
    assert all(books.live[s] for s in SYMBOLS)
    assert got == [{"type": "subscribe", "product_ids": PRODUCTS, "channels": ["level2_batch", "heartbeat"]}]
    assert venue.connections == 1 and runner.counters["syncs"] == 10
    assert not runner.counters["resync_crossed"] and not runner.counters["malformed"]


def big_snapshot(levels: int, seq: int) -> tuple[str, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    """A BTC-USD snapshot of ``levels`` levels per side (several MB, like the real one)."""
    bids = [(Decimal("50000.00") - i * Decimal("0.01"), Decimal(f"0.{i % 997 + 1:08d}")) for i in range(levels)]
    asks = [(Decimal("50000.01") + i * Decimal("0.01"), Decimal(f"1.{i % 991:04d}")) for i in range(levels)]
    ups = [{"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": str(p), "new_quantity": str(q)}
           for p, q in bids]
    ups += [{"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": str(p), "new_quantity": str(q)}
            for p, q in asks]
    text = json.dumps({"channel": "l2_data", "client_id": "", "timestamp": "2021-04-17T16:43:37Z",
                       "sequence_num": seq, "events": [{"type": "snapshot", "product_id": "BTC-USD", "updates": ups}]})
    return text, bids, asks


def test_advanced_feed_over_sockets_big_snapshot_and_sequence_jump() -> None:
    """Advanced Trade: the public product list (filtered to our products), level2 + heartbeats
    subscribes, a multi-MB BTC-USD snapshot, then the transcoded recording with one message
    missing: the feed reconnects; the second connection's snapshots replace every book, and the
    published books end equal to the venue's."""
    texts = recording()
    cut = 4000
    symbols = (*SYMBOLS, "BTC/USD")
    big, big_bids, big_asks = big_snapshot(60_000, 1)
    first = list(to_advanced(texts[:cut], seq0=2))
    lost = next(i for i, t in enumerate(first) if i > 200 and '"l2_data"' in t)
    ref = RefBooks()
    for m in map(json.loads, texts[:cut]):
        ref.feed(m)
    second = advanced_snapshots(ref, 2) + list(to_advanced(texts[cut:], seq0=2 + len(PRODUCTS)))
    for m in map(json.loads, texts[cut:]):
        ref.feed(m)
    subscribes: list[list[Any]] = []
    products = json.dumps({"products": [{"product_id": p, "status": "online", "trading_disabled": False,
                                         "is_disabled": False} for p in (*PRODUCTS, "BTC-USD")],
                           "num_products": len(PRODUCTS) + 1})

    async def ws(conn: ServerConnection, n: int) -> None:
        subscribes.append([json.loads(await conn.recv()), json.loads(await conn.recv())])
        await conn.send(json.dumps({"channel": "subscriptions", "timestamp": "2021-04-17T16:43:37Z",
                                    "sequence_num": 0, "events": [{"subscriptions": {"level2": PRODUCTS}}]}))
        await conn.send(big)
        for t in (first[:lost] + first[lost + 1:]) if n == 1 else second:
            await conn.send(t)
        if n > 1:
            venue.done.set()
        await conn.wait_closed()

    venue = Venue(ws, {"/api/v3/brokerage/market/products": products})

    def done(b: BusBooks) -> bool:
        return b.live.get("BTC/USD", False) and all(
            b.live.get(s) and b.levels(s) == ref.levels(s.replace("/", "-")) for s in SYMBOLS)

    async def scenario() -> tuple[FeedRunner, BusBooks]:
        async with venue.running():
            return await follow(spec_advanced.SPEC, venue_cfg(venue.port, symbols), venue, done)

    runner, books = asyncio.run(scenario())
    assert len(big) > 5_000_000
    assert venue.connections == 2 and runner.counters["conn_seq_gaps"] == 1
    assert subscribes == [[{"type": "subscribe", "product_ids": [*PRODUCTS, "BTC-USD"], "channel": "level2"},
                           {"type": "subscribe", "channel": "heartbeats"}]] * 2
    assert venue.queries[0] == "product_type=SPOT&" + "&".join(f"product_ids={p}" for p in (*PRODUCTS, "BTC-USD"))
    assert books.levels("BTC/USD") == (big_bids, big_asks)
