"""The Kraken v2 feed over real sockets: the real FeedRunner (WebSocket, REST pair check, ZeroMQ
bus) against a small fake Kraken written here from the documented protocol. It replays the real
SDK v2 recording printed at wire precision, injects one wrong checksum, and checks that only that
symbol resyncs (unsubscribe + subscribe), that nothing of it is published while it is void, and
that the published book ends equal to the fake's true book."""

from __future__ import annotations

import asyncio
import json
import zlib
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from common.config import VenueConfig
from common.feed.runner import FeedRunner
from common.ports import free_port
from common.schema import DELTA, LIVE, SNAP, SYNCING, BookMsg, StatusMsg
from services.feed_kraken.spec_v2 import SPEC
from tests.replay_util import read_http, recorded
from tests.test_feed_runner import Bus, FakeVenue, finish

pytestmark = pytest.mark.timeout(60)

WRONG_AT = 200          # the BTC/USD update whose checksum the fake corrupts
PREC = {"BTC/USD": (1, 8), "DOGE/USD": (7, 8)}


def wire(v: Any, places: int) -> str:
    """A number as Kraken prints it: fixed decimals (the SDK file's floats lost them)."""
    return format(Decimal(str(v)), f".{places}f")


class TrueBook:
    """The fake's own book of one symbol, as wire text, truncated to ``depth``; its CRC is taken
    from that text (independent of the feed's code)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.sides: dict[str, dict[Decimal, tuple[str, str]]] = {"bids": {}, "asks": {}}

    def apply(self, side: str, levels: list[tuple[str, str]]) -> None:
        d = self.sides[side]
        for p, q in levels:
            if Decimal(q) == 0:
                d.pop(Decimal(p), None)
            else:
                d[Decimal(p)] = (p, q)
        while len(d) > self.depth:
            del d[min(d) if side == "bids" else max(d)]

    def sorted(self, side: str) -> list[tuple[str, str]]:
        d = self.sides[side]
        return [d[k] for k in sorted(d, reverse=side == "bids")]

    def crc(self) -> int:
        def text(levels: list[tuple[str, str]]) -> str:
            return "".join(p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0") for p, q in levels[:10])
        return zlib.crc32((text(self.sorted("asks")) + text(self.sorted("bids"))).encode())

    def frame(self, symbol: str, typ: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]],
              checksum: int) -> str:
        lv = lambda xs: ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in xs)  # noqa: E731
        return (f'{{"channel":"book","type":"{typ}","data":[{{"symbol":"{symbol}","bids":[{lv(bids)}],'
                f'"asks":[{lv(asks)}],"checksum":{checksum},"timestamp":"2023-07-30T15:29:58.343415Z"}}]}}')


class FakeKraken:
    """Kraken v2 as documented: status on connect; instrument and book subscriptions with one ack
    per symbol and a snapshot; unsubscribe stops a symbol; ping -> pong."""

    def __init__(self) -> None:
        doc = json.loads((recorded("kraken") / "python-kraken-sdk_orderbook-v2.json").read_text())
        self.btc_init = doc["init"]["data"][0]
        self.btc_updates = [u["data"][0] for u in doc["updates"]]
        self.books = {"BTC/USD": TrueBook(10), "DOGE/USD": TrueBook(10)}
        self.received: list[dict[str, Any]] = []
        self.streaming: dict[str, asyncio.Task[None]] = {}
        self.next_update = 0
        self.done = asyncio.Event()

    def levels(self, sym: str, raw: list[dict[str, Any]]) -> list[tuple[str, str]]:
        pp, qp = PREC[sym]
        return [(wire(x["price"], pp), wire(x["qty"], qp)) for x in raw]

    async def btc_stream(self, conn: ServerConnection) -> None:
        book = self.books["BTC/USD"]
        while self.next_update < len(self.btc_updates):
            u = self.btc_updates[self.next_update]
            bids, asks = self.levels("BTC/USD", u["bids"]), self.levels("BTC/USD", u["asks"])
            book.apply("bids", bids)
            book.apply("asks", asks)
            assert book.crc() == u["checksum"]          # the fake's book is the recorded one
            ck = u["checksum"] + (1 if self.next_update == WRONG_AT else 0)
            self.next_update += 1
            await conn.send(book.frame("BTC/USD", "update", bids, asks, ck))
            await asyncio.sleep(0.001)
        self.done.set()

    async def snapshot(self, conn: ServerConnection, sym: str) -> None:
        book = self.books[sym]
        await conn.send(book.frame(sym, "snapshot", book.sorted("bids"), book.sorted("asks"), book.crc()))

    async def handler(self, conn: ServerConnection, fake: FakeVenue) -> None:
        await conn.send('{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
                        '"api_version":"v2","connection_id":15483510049470446170}]}')
        async for text in conn:
            m = json.loads(text)
            self.received.append(m)
            method, params = m.get("method"), m.get("params", {})
            if method == "ping":
                await conn.send(json.dumps({"method": "pong", "req_id": m.get("req_id")}))
            elif method == "subscribe" and params.get("channel") == "instrument":
                pairs = [{"symbol": s, "price_precision": pp, "qty_precision": qp, "status": "online"}
                         for s, (pp, qp) in PREC.items()]
                await conn.send(json.dumps({"method": "subscribe", "success": True, "req_id": m.get("req_id"),
                                            "result": {"channel": "instrument", "snapshot": True}}))
                await conn.send(json.dumps({"channel": "instrument", "type": "snapshot",
                                            "data": {"assets": [], "pairs": pairs}}))
            elif method in ("subscribe", "unsubscribe") and params.get("channel") == "book":
                for sym in params["symbol"]:
                    await conn.send(json.dumps({"method": method, "success": True, "req_id": m.get("req_id"),
                                                "result": {"channel": "book", "depth": params["depth"],
                                                           "symbol": sym}}))
                    if method == "unsubscribe":
                        task = self.streaming.pop(sym, None)
                        if task is not None:
                            task.cancel()
                        continue
                    await self.snapshot(conn, sym)
                    if sym == "BTC/USD":
                        self.streaming[sym] = asyncio.create_task(self.btc_stream(conn))


def kraken_cfg(port: int) -> VenueConfig:
    return VenueConfig(id="fake_kraken", kind="kraken", api="v2", enabled=True, symbols=("BTC/USD", "DOGE/USD"),
                       ws_url=f"ws://127.0.0.1:{port}", rest_url=f"http://127.0.0.1:{port}",
                       pub=f"tcp://127.0.0.1:{free_port()}", ctl=f"tcp://127.0.0.1:{free_port()}",
                       stale_after=5.0, depth=10, taker_fee=Decimal(0), cpu=None,
                       options={"backoff_initial": 0.01, "backoff_cap": 0.04, "backoff_jitter": 0.0})


def test_v2_feed_resyncs_one_symbol_on_a_wrong_checksum_and_ends_on_the_true_book() -> None:
    """Pair check from the recorded AssetPairs; both symbols live; the wrong checksum at update
    200 makes the feed publish BTC/USD syncing and send unsubscribe + subscribe of BTC/USD only;
    no BTC/USD book message between the syncing status and the new snap; DOGE/USD never leaves
    live; at the end the book a subscriber rebuilds equals the fake's true book."""
    kr = FakeKraken()
    btc = kr.books["BTC/USD"]
    btc.apply("bids", kr.levels("BTC/USD", kr.btc_init["bids"]))
    btc.apply("asks", kr.levels("BTC/USD", kr.btc_init["asks"]))
    assert btc.crc() == kr.btc_init["checksum"]
    doge = kr.books["DOGE/USD"]
    doge.apply("bids", [("0.0612340", "1500.00000000"), ("0.0612300", "20.50000000")])
    doge.apply("asks", [("0.0612350", "0.10000000")])
    asset_pairs = read_http(recorded("kraken") / "KRAKEN.0")[0].body

    async def scenario() -> None:
        fake = FakeVenue(kr.handler)
        fake.routes = {"/0/public/AssetPairs": lambda: (200, asset_pairs, {})}
        async with fake.running():
            cfg = kraken_cfg(fake.port)
            bus = Bus(cfg.pub)
            runner = FeedRunner(SPEC, cfg)
            task = asyncio.create_task(runner.run())
            try:
                await bus.until(lambda ms: bool(ms))
                fake.gate.set()
                await asyncio.wait_for(kr.done.wait(), 30)
                want_bids = [(Decimal(p), Decimal(q)) for p, q in btc.sorted("bids")]
                want_asks = [(Decimal(p), Decimal(q)) for p, q in btc.sorted("asks")]
                books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}

                def rebuilt(ms: list[Any]) -> bool:
                    books.clear()
                    for m in ms:
                        if isinstance(m, BookMsg):
                            if m.kind == SNAP:
                                books[m.symbol] = {"bids": dict(m.bids), "asks": dict(m.asks)}
                            else:
                                for side, lv in (("bids", m.bids), ("asks", m.asks)):
                                    for p, q in lv:
                                        if q:
                                            books[m.symbol][side][p] = q
                                        else:
                                            books[m.symbol][side].pop(p, None)
                        elif isinstance(m, StatusMsg):
                            books.pop(m.symbol, None)
                    b = books.get("BTC/USD")
                    return b is not None and sorted(b["bids"].items(), reverse=True) == want_bids and \
                        sorted(b["asks"].items()) == want_asks

                await bus.until(rebuilt, 20)
                assert runner.core.counters["checksum_failures"] == 1
                book_subs = [(m["method"], m["params"]["symbol"]) for m in kr.received
                             if m.get("params", {}).get("channel") == "book"]
                assert book_subs == [("subscribe", ["BTC/USD", "DOGE/USD"]), ("unsubscribe", ["BTC/USD"]),
                                     ("subscribe", ["BTC/USD"])]
                btc_msgs = bus.book("BTC/USD")
                kinds = [m.kind if isinstance(m, BookMsg) else m.status for m in btc_msgs]
                i = kinds.index(SYNCING, kinds.index(SNAP))
                assert kinds[i + 1] == SNAP and set(kinds[kinds.index(SNAP) + 1:i]) <= {DELTA}
                assert "checksum mismatch" in btc_msgs[i].reason
                doge_kinds = [m.kind if isinstance(m, BookMsg) else m.status for m in bus.book("DOGE/USD")]
                assert doge_kinds[doge_kinds.index(SNAP):] == [SNAP]
                assert books["DOGE/USD"] == {"bids": {Decimal("0.0612340"): Decimal("1500"),
                                                      Decimal("0.0612300"): Decimal("20.5")},
                                             "asks": {Decimal("0.0612350"): Decimal("0.1")}}
                assert runner.core.streams["BTC/USD"].status == LIVE
                assert runner.core.streams["BTC/USD"].precision == (1, 8)
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())
