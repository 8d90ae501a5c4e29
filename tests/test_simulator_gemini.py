"""The simulator's Gemini (current API at /, market data v2 at /v2/marketdata), seen from outside
over real WebSockets with a naive client written here (plain dicts): full initial books, U/u
contiguity, /book equality, heartbeats, errors, and the faults (a drop after which a level
removed meanwhile must not survive, gap, malformed, unlist). No feed code is used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from services.simulator.app import settings_from
from tests.test_simulator import Running

SYMBOLS = ("BTC/USD", "ETH/USD")
Side = dict[Decimal, Decimal]


def make(rate: float = 200.0, **kw: Any) -> Running:
    raw: dict[str, Any] = {"host": "127.0.0.1", "control_port": 0, "seed": 11, "rate": rate,
                           "venues": {"gemini": {"kind": "gemini", "port": 0}}}
    raw.update(kw)
    return Running(settings_from(raw, SYMBOLS, replays={}, replay_speed=0.0))


@pytest.fixture
def sim() -> Iterator[Running]:
    r = make()
    try:
        yield r
    finally:
        r.close()


def ws(r: Running, path: str) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{r.port('gemini')}{path}", max_size=None, open_timeout=5, close_timeout=2)


def recv(c: ClientConnection, timeout: float = 10.0) -> Any:
    return json.loads(c.recv(timeout=timeout))


def rest_of(c: ClientConnection, quiet: float = 0.5) -> list[Any]:
    out = []
    while True:
        try:
            out.append(json.loads(c.recv(timeout=quiet)))
        except TimeoutError:
            return out


def apply(side: Side, levels: list[list[str]]) -> None:
    for p, q in levels:
        if Decimal(q):
            side[Decimal(p)] = Decimal(q)
        else:
            side.pop(Decimal(p), None)


def truth(r: Running, symbol: str) -> tuple[Side, Side]:
    reply = r.ctl("/book", venue="gemini", symbol=symbol).json()
    bids: Side = {}
    asks: Side = {}
    apply(bids, reply["bids"])
    apply(asks, reply["asks"])
    return bids, asks


class WsClient:
    """The current API, naively: the first event of a symbol replaces its book, later ones must
    continue U/u (``U == previous u + 1``); a break is recorded, not repaired."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[Side, Side]] = {}
        self.last_u: dict[str, int] = {}
        self.gaps: list[tuple[str, int, int]] = []
        self.events = 0

    def feed(self, ev: dict[str, Any]) -> None:
        s = ev["s"]
        if s not in self.books:
            assert ev["U"] == ev["u"], "the initial book carries U == u"
            self.books[s] = ({}, {})
        elif ev["U"] != self.last_u[s] + 1:
            self.gaps.append((s, self.last_u[s], ev["U"]))
        assert ev["U"] <= ev["u"]
        self.last_u[s] = ev["u"]
        apply(self.books[s][0], ev["b"])
        apply(self.books[s][1], ev["a"])
        self.events += 1


class V2Client:
    """Market data v2, naively: an l2_updates with ``trades`` replaces the book, others apply."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[Side, Side]] = {}
        self.initials: dict[str, int] = {}
        self.trades = 0
        self.heartbeats = 0
        self.updates = 0

    def feed(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "heartbeat":
            self.heartbeats += 1
            return
        if msg["type"] == "trade":
            self.trades += 1
            return
        assert msg["type"] == "l2_updates"
        s = msg["symbol"]
        if "trades" in msg:
            assert "auction_events" in msg
            self.books[s] = ({}, {})
            self.initials[s] = self.initials.get(s, 0) + 1
        assert s in self.books, "an update before the initial book"
        for side, p, q in msg["changes"]:
            apply(self.books[s][0 if side == "buy" else 1], [[p, q]])
        self.updates += 1


def ws_subscribe(c: ClientConnection, streams: list[str], rid: int = 1) -> None:
    c.send(json.dumps({"id": rid, "method": "SUBSCRIBE", "params": streams}))


def v2_subscribe(c: ClientConnection, symbols: list[str], typ: str = "subscribe") -> None:
    c.send(json.dumps({"type": typ, "subscriptions": [{"name": "l2", "symbols": symbols}]}))


# --- tests -----------------------------------------------------------------------------------------

def test_rest_symbols_and_details(sim: Running) -> None:
    """/v1/symbols lists lowercase names; details carry tick_size/quote_increment as JSON numbers
    (1E-8 as the venue prints it); an unknown symbol is HTTP 400 InvalidSymbol."""
    assert sim.rest("gemini", "/v1/symbols").json() == ["btcusd", "ethusd"]
    d = sim.rest("gemini", "/v1/symbols/details/btcusd")
    assert '"tick_size":1E-8' in d.text and '"quote_increment":0.01' in d.text
    body = json.loads(d.text, parse_float=Decimal)
    assert (body["symbol"], body["tick_size"], body["quote_increment"], body["status"]) == \
        ("BTCUSD", Decimal("1E-8"), Decimal("0.01"), "open")
    bad = sim.rest("gemini", "/v1/symbols/details/xyzusd")
    assert bad.status_code == 400 and bad.json()["reason"] == "InvalidSymbol"


def test_ws_full_initial_book_then_contiguous_diffs(sim: Running) -> None:
    """?snapshot=-1: SUBSCRIBE -> status 200; the first event of each symbol is its full book
    (U == u), then U == previous u + 1; after /pause the client's books equal /book."""
    with ws(sim, "/?snapshot=-1") as c:
        ws_subscribe(c, ["btcusd@depth@100ms", "ethusd@depth@100ms"], rid=1)
        assert recv(c) == {"id": 1, "status": 200, "result": None}
        cl = WsClient()
        while cl.events < 400:
            cl.feed(recv(c))
        sim.ctl("/pause")
        for ev in rest_of(c):
            cl.feed(ev)
        assert cl.gaps == []
        assert sorted(cl.books) == ["btcusd", "ethusd"]
        for s in SYMBOLS:
            assert cl.books[s.replace("/", "").lower()] == truth(sim, s)
        c.send(json.dumps({"id": 2, "method": "LIST_SUBSCRIPTIONS"}))
        assert recv(c) == {"id": 2, "status": 200, "result": ["btcusd@depth@100ms", "ethusd@depth@100ms"]}


def test_ws_unknown_symbol_and_top_n_and_no_snapshot() -> None:
    """An unknown symbol is status 400 (nothing of the request subscribed); ?snapshot=5 starts
    with the best 5 levels per side; without the parameter only diffs come (U > the book's id)."""
    r = make(rate=0.0)
    try:
        with ws(r, "/?snapshot=-1") as c:
            ws_subscribe(c, ["btcusd@depth@100ms", "xyzusd@depth@100ms"], rid=7)
            err = recv(c)
            assert (err["id"], err["status"], err["error"]["code"]) == (7, 400, -1013)
            assert "xyzusd" in err["error"]["msg"]
            c.send(json.dumps({"id": 8, "method": "LIST_SUBSCRIPTIONS"}))
            assert recv(c)["result"] == []
        bids, asks = truth(r, "BTC/USD")
        with ws(r, "/?snapshot=5") as c:
            ws_subscribe(c, ["btcusd@depth"])
            recv(c)
            first = recv(c)
            assert [[Decimal(p), Decimal(q)] for p, q in first["b"]] == [[p, bids[p]] for p in sorted(bids)[::-1][:5]]
            assert [[Decimal(p), Decimal(q)] for p, q in first["a"]] == [[p, asks[p]] for p in sorted(asks)[:5]]
        with ws(r, "/") as c:
            ws_subscribe(c, ["btcusd@depth@100ms"])
            recv(c)
            venue = r.sim.venues["gemini"]
            r.loop.call_soon_threadsafe(lambda: venue.emit("BTC/USD", 0.0))
            ev = recv(c)
            assert ev["U"] == first["u"] + 1 and len(ev["b"]) + len(ev["a"]) < 200
    finally:
        r.close()


def test_v2_initial_book_updates_trades_heartbeat(sim: Running) -> None:
    """/v2/marketdata: the first l2_updates per symbol is the full book with trades and
    auction_events; later ones only changes; trades and a heartbeat (about every 5 s) arrive;
    after /pause the client's books equal /book; an unknown symbol is an InvalidSymbol error."""
    with ws(sim, "/v2/marketdata") as c:
        v2_subscribe(c, ["BTCUSD", "ETHUSD", "XYZUSD"])
        cl = V2Client()
        errors = []
        while cl.heartbeats == 0 or cl.trades == 0:
            msg = recv(c)
            if msg.get("type") == "error":
                errors.append(msg)
            else:
                cl.feed(msg)
        sim.ctl("/pause")
        for msg in rest_of(c):
            cl.feed(msg)
        assert cl.initials == {"BTCUSD": 1, "ETHUSD": 1}
        assert [(e["reason"], "XYZUSD" in e["message"]) for e in errors] == [("InvalidSymbol", True)]
        for s in SYMBOLS:
            assert cl.books[s.replace("/", "")] == truth(sim, s)


def test_drop_reconnect_gives_a_fresh_book_without_ghosts(sim: Running) -> None:
    """drop: every connection closes and the best 3 levels per side leave the truth while nobody
    is connected. A client that merged the new initial book into its old one would keep them as
    ghosts; the new initial book (both APIs) has none of them and equals /book."""
    old_ws, old_v2 = WsClient(), V2Client()
    with ws(sim, "/?snapshot=-1") as c1, ws(sim, "/v2/marketdata") as c2:
        ws_subscribe(c1, ["btcusd@depth@100ms"])
        recv(c1)
        v2_subscribe(c2, ["BTCUSD"])
        while old_ws.events < 50:
            old_ws.feed(recv(c1))
        while old_v2.updates < 50:
            old_v2.feed(recv(c2))
        sim.ctl("/pause")
        for ev in rest_of(c1):
            old_ws.feed(ev)
        for msg in rest_of(c2):
            old_v2.feed(msg)
        f = sim.ctl("/fault", venue="gemini", kind="drop").json()["fault"]
        assert f["connections"] == 2
        removed = f["removed"]["BTC/USD"]
        assert len(removed["bids"]) == len(removed["asks"]) == 3
        for c in (c1, c2):
            with pytest.raises(ConnectionClosed):
                while True:
                    c.recv(timeout=5)
    gone = {Decimal(p) for p in removed["bids"] + removed["asks"]}
    for bids, asks in (old_ws.books["btcusd"], old_v2.books["BTCUSD"]):
        assert gone <= set(bids) | set(asks), "the old book held the removed levels"
    bids, asks = truth(sim, "BTC/USD")
    assert not gone & (set(bids) | set(asks))
    with ws(sim, "/?snapshot=-1") as c1, ws(sim, "/v2/marketdata") as c2:
        ws_subscribe(c1, ["btcusd@depth@100ms"])
        recv(c1)
        v2_subscribe(c2, ["BTCUSD"])
        new_ws, new_v2 = WsClient(), V2Client()
        new_ws.feed(recv(c1))
        new_v2.feed(recv(c2))
        assert new_ws.books["btcusd"] == new_v2.books["BTCUSD"] == (bids, asks)
        assert new_ws.last_u["btcusd"] > old_ws.last_u["btcusd"]


def test_gap_skips_update_ids(sim: Running) -> None:
    """gap count=3: the next BTC/USD event of the current API has U > previous u + 1 (the lost
    changes are in the truth); v2 just misses them."""
    with ws(sim, "/?snapshot=-1") as c:
        ws_subscribe(c, ["btcusd@depth@100ms"])
        recv(c)
        cl = WsClient()
        while cl.events < 20:
            cl.feed(recv(c))
        assert sim.ctl("/fault", venue="gemini", kind="gap", symbol="BTC/USD", count=3).json()["ok"] is True
        while not cl.gaps:
            cl.feed(recv(c))
        (sym, last_u, first_u), = cl.gaps
        assert sym == "btcusd" and first_u > last_u + 3


def test_malformed_frames_and_unlist(sim: Running) -> None:
    """malformed: bad JSON, wrong types, negative and NaN quantity on both APIs (none touches the
    truth); unlist removes a symbol from /v1/symbols, details and subscriptions; lag_snapshot is
    refused (no REST snapshot)."""
    with ws(sim, "/?snapshot=-1") as c1, ws(sim, "/v2/marketdata") as c2:
        ws_subscribe(c1, ["btcusd@depth@100ms"])
        recv(c1)
        v2_subscribe(c2, ["BTCUSD"])
        recv(c2)
        sim.ctl("/pause")
        rest_of(c1)
        rest_of(c2)
        assert sim.ctl("/fault", venue="gemini", kind="malformed", count=4).json()["fault"]["frames"] == 8
        for c, field in ((c1, "b"), (c2, "changes")):
            texts = [c.recv(timeout=5) for _ in range(4)]
            with pytest.raises(ValueError):
                json.loads(texts[0])
            assert json.loads(texts[1])[field] == "not a list"
            assert "-1" in texts[2] and "NaN" in texts[3]
    sim.ctl("/fault", venue="gemini", kind="unlist", symbol="ETH/USD")
    assert sim.rest("gemini", "/v1/symbols").json() == ["btcusd"]
    assert sim.rest("gemini", "/v1/symbols/details/ethusd").status_code == 400
    with ws(sim, "/") as c:
        ws_subscribe(c, ["ethusd@depth@100ms"], rid=4)
        assert recv(c)["status"] == 400
    assert sim.ctl("/fault", venue="gemini", kind="lag_snapshot").status_code == 400


def test_no_initial_book_fault(sim: Running) -> None:
    """no_initial_book count=2: the next two subscriptions get updates but no initial book (the
    current API's first event is a plain diff, v2's first l2_updates has no trades key); the
    third subscription gets its book again."""
    assert sim.ctl("/fault", venue="gemini", kind="no_initial_book", count=2).json()["fault"]["count"] == 2
    with ws(sim, "/?snapshot=-1") as c1, ws(sim, "/v2/marketdata") as c2:
        ws_subscribe(c1, ["btcusd@depth@100ms"])
        recv(c1)
        first = recv(c1)
        assert len(first["b"]) + len(first["a"]) < 200
        v2_subscribe(c2, ["BTCUSD"])
        msg = recv(c2)
        while msg["type"] != "l2_updates":
            msg = recv(c2)
        assert "trades" not in msg and len(msg["changes"]) < 200
    with ws(sim, "/v2/marketdata") as c2:
        v2_subscribe(c2, ["BTCUSD"])
        cl = V2Client()
        cl.feed(recv(c2))
        assert cl.initials == {"BTCUSD": 1}
    assert sim.ctl("/stats").json()["venues"]["gemini"]["initial_books_withheld"] == 2
