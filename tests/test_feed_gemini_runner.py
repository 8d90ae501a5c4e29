"""Gemini through the real feed transport over loopback sockets, against a tiny fake venue written
here: the WebSocket API (snapshot=-1 on the URL, SUBSCRIBE, the first event per connection
replacing the book, a gap reconnecting, the pair check) and the real v2 recording replayed
through a socket, the published books compared with the plain-dict reference."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal as D

import pytest
from websockets.asyncio.server import ServerConnection

from common.schema import DOWN, LIVE, SNAP, SYNCING, BookMsg, StatusMsg
from services.feed_gemini import spec_v2, spec_ws
from tests.replay_util import read_http, read_ws, recorded
from tests.test_feed_gemini import RefBook
from tests.test_feed_gemini_core import RECORDED_SYMBOLS, Subscriber
from tests.test_feed_runner import FakeVenue, finish, start, venue_cfg

pytestmark = pytest.mark.timeout(60)


def details_routes(listed: dict[str, str], unknown: tuple[str, ...] = ()) -> dict:
    """``/v1/symbols/details/<name>`` answers as Gemini gives them: the listed pairs (canonical ->
    status) and ``InvalidSymbol`` (HTTP 400) for ``unknown`` canonical symbols."""
    routes = {}
    for sym, status in listed.items():
        base, quote = sym.split("/")
        body = json.dumps({"symbol": (base + quote).upper(), "base_currency": base, "quote_currency": quote,
                           "tick_size": 1e-8, "quote_increment": 0.01, "min_order_size": "0.00001",
                           "status": status})
        routes[f"/v1/symbols/details/{(base + quote).lower()}"] = (lambda b=body: (200, b, {}))
    for sym in unknown:
        err = json.dumps({"result": "error", "reason": "InvalidSymbol", "message": f"Supplied value {sym} "
                          "is not a valid symbol"})
        routes[f"/v1/symbols/details/{sym.replace('/', '').lower()}"] = (lambda e=err: (400, e, {}))
    return routes


def depth(sym: str, first: int, last: int, bids: list, asks: list) -> str:
    return json.dumps({"e": "depthUpdate", "E": 1_700_000_000_000_000_000, "s": sym, "U": first, "u": last,
                       "b": bids, "a": asks})


def test_ws_api_over_sockets_reconnect_replaces_the_book_and_gap_reconnects() -> None:
    """Every connection asks for ?snapshot=-1 and subscribes each listed symbol's depth stream;
    the first event per connection is the whole book; after a dropped connection the new book
    replaces the old one (a level removed meanwhile is not published); a skipped id makes a new
    connection; a symbol the details endpoint does not know is down."""
    paths: list[str] = []
    subscribes: list[dict] = []

    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        assert conn.request is not None
        paths.append(conn.request.path)
        subscribes.append(json.loads(await conn.recv()))
        await conn.send('{"id":1,"status":200,"result":null}')
        n = v.connections
        if n == 1:
            await conn.send(depth("btcusd", 1, 50, [["100", "1"], ["99", "2"]], [["101", "1"], ["102", "3"]]))
            await conn.send(depth("btcusd", 51, 52, [["98", "5"]], [["101", "0"]]))
            await asyncio.sleep(0.3)
            await conn.close()
            return
        if n == 2:
            # while we were away the 99 bid and the 102 ask went
            await conn.send(depth("btcusd", 900, 900, [["100", "1"], ["98", "5"]], [["103", "1"]]))
            await asyncio.sleep(0.3)
            await conn.send(depth("btcusd", 902, 902, [["97", "1"]], []))    # 901 missed: a gap
            await conn.send(depth("btcusd", 903, 903, [["96", "1"]], []))    # on the old connection
            await conn.wait_closed()
            return
        await conn.send(depth("btcusd", 2000, 2000, [["100", "2"]], [["103", "1"]]))
        await conn.wait_closed()

    async def scenario() -> None:
        fake = FakeVenue(ws)
        fake.routes = details_routes({"BTC/USD": "open"}, ("FOO/USD",))
        async with fake.running():
            cfg = venue_cfg("gemini", fake.port, ("BTC/USD", "FOO/USD"))
            runner, task, bus = await start(spec_ws.SPEC, cfg, fake)
            try:
                await bus.until(lambda ms: sum(isinstance(m, BookMsg) and m.kind == SNAP for m in ms) >= 3)
                msgs = bus.book("BTC/USD")
                sub = Subscriber(late=True)
                snaps = []
                for m in msgs:
                    sub.apply(m)
                    if isinstance(m, BookMsg) and m.kind == SNAP:
                        snaps.append((m.bids, m.asks))
                assert snaps[0] == ([(D(100), D(1)), (D(99), D(2))], [(D(101), D(1)), (D(102), D(3))])
                assert snaps[1] == ([(D(100), D(1)), (D(98), D(5))], [(D(103), D(1))])
                assert snaps[2] == ([(D(100), D(2))], [(D(103), D(1))])
                assert sub.levels("BTC/USD") == ([(D(100), D(2))], [(D(103), D(1))])
                statuses = [m for m in msgs if isinstance(m, StatusMsg)]
                assert any("gap before u 902" in m.reason and m.status == SYNCING for m in statuses)
                assert all(p == "/?snapshot=-1" for p in paths) and len(paths) == 3
                assert subscribes == [{"id": 1, "method": "SUBSCRIBE", "params": ["btcusd@depth@100ms"]}] * 3
                foo = [m for m in bus.msgs if isinstance(m, StatusMsg) and m.symbol == "FOO/USD"]
                assert foo and foo[-1].status == DOWN and "not listed" in foo[-1].reason
                assert runner.counters["gaps"] == 1 and sub.status["BTC/USD"] == LIVE
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())


def test_v2_recording_over_a_socket_equals_reference() -> None:
    """The real v2 recording served over a WebSocket after the recorder's own subscribe frame
    (checked byte for byte); the pair check asks each symbol's details; the books rebuilt
    from the bus end equal to the plain-dict reference of the whole recording, every symbol
    live, no resync."""
    path = recorded("gemini") / "GEMINI.ws.1.0"
    sent = [ln.split(": ", 1)[1] for ln in path.read_text(encoding="utf-8").split("\n") if " <- " in ln]
    frames = [fr.text for fr in read_ws(path)]
    listing = next(r.body for r in read_http(recorded("gemini") / "GEMINI.0") if r.url.endswith("/v1/symbols"))
    ref = RefBook()
    for text in frames:
        m = json.loads(text)
        if m["type"] == "l2_updates":
            ref.apply(m)
    want = {s: ref.levels(s.replace("/", "")) for s in RECORDED_SYMBOLS}
    got_subscribe: list[str] = []

    async def ws(conn: ServerConnection, v: FakeVenue) -> None:
        got_subscribe.append(str(await conn.recv()))
        for text in frames:
            await conn.send(text)
        await conn.wait_closed()

    async def scenario() -> None:
        fake = FakeVenue(ws)
        fake.routes = {"/v1/symbols": lambda: (200, listing, {}),
                       **details_routes(dict.fromkeys(RECORDED_SYMBOLS, "open"))}
        async with fake.running():
            cfg = venue_cfg("gemini", fake.port, RECORDED_SYMBOLS)
            runner, task, bus = await start(spec_v2.SPEC, cfg, fake)
            sub = Subscriber(late=True)
            seen = [0]

            def done(ms: list) -> bool:
                for m in ms[seen[0]:]:
                    sub.apply(m)
                seen[0] = len(ms)
                return all(sub.status.get(s) == LIVE and sub.levels(s) == want[s] for s in RECORDED_SYMBOLS)
            try:
                await bus.until(done, timeout=30)
                assert got_subscribe == sent
                assert sub.snaps == 10 and fake.connections == 1
                assert runner.counters["syncs"] == 10 and runner.counters["gaps"] == 0
                print(f"\ngemini v2 over a socket: {sub.snaps} snaps, {sub.deltas} deltas (coalesced from 645 "
                      f"updates), books equal to the reference")
            finally:
                await finish(runner, task, bus)

    asyncio.run(scenario())
