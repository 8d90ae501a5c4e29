"""Gemini through the real FeedCore, in-process (no sockets): the real v2 recording, and the
WebSocket API's reconnect, gap, snapshot-timeout and refused-symbol paths. What the core publishes
is rebuilt into books by a plain subscriber model and compared with an independent reference."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal

from common.config import VenueConfig
from common.feed.actions import Reconnect, Send
from common.feed.core import FeedCore
from common.feed.runner import resolve_options
from common.feed.spec import FeedSpec
from common.schema import DELTA, DOWN, LIVE, SNAP, SYNCING, BookMsg, HeartbeatMsg, StatusMsg
from services.feed_gemini import spec_v2, spec_ws
from tests.replay_util import recorded, ref_sorted

D = Decimal
RECORDED_SYMBOLS = ("BTC/GBP", "LINK/ETH", "FIL/USD", "ZEC/LTC", "BAT/BTC", "ETH/EUR", "LTC/ETH", "GRT/USD",
                    "ANKR/USD", "ALCX/USD")


def cfg(symbols: tuple[str, ...], ws_url: str) -> VenueConfig:
    return VenueConfig(id="gemini", kind="gemini", enabled=True, symbols=symbols, ws_url=ws_url,
                       rest_url="https://127.0.0.1:9", pub="inproc://p", ctl="inproc://c", stale_after=5.0,
                       depth=5000, taker_fee=D(0), cpu=None)


@dataclass
class Subscriber:
    """A bus subscriber by hand: per symbol a status and a plain-dict book built only from what
    the core published (snap replaces, delta applies, a non-live status empties it). It checks
    that every stream's seq grows by one and that no delta arrives for a symbol that is not live."""

    status: dict[str, str] = field(default_factory=dict)
    books: dict[str, tuple[dict, dict]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    snaps: int = 0
    deltas: int = 0
    #: Subscribed after the feed started: a stream's first message seen sets its seq baseline.
    late: bool = False

    def take(self, core: FeedCore) -> None:
        core.flush()
        for m in core.take_bus():
            self.apply(m)

    def apply(self, m: object) -> None:
        """One bus message."""
        if isinstance(m, HeartbeatMsg):
            return
        assert isinstance(m, BookMsg | StatusMsg), m
        if not (self.late and m.symbol not in self.seqs):
            assert m.seq == self.seqs.get(m.symbol, 0) + 1, (m.symbol, m.seq, self.seqs.get(m.symbol))
        self.seqs[m.symbol] = m.seq
        if isinstance(m, StatusMsg):
            self.status[m.symbol] = m.status
            if m.status != LIVE:
                self.books.pop(m.symbol, None)
        elif m.kind == SNAP:
            self.snaps += 1
            self.status[m.symbol] = LIVE
            self.books[m.symbol] = (dict(m.bids), dict(m.asks))
        else:
            assert m.kind == DELTA
            assert self.status.get(m.symbol) == LIVE, m.symbol
            self.deltas += 1
            for side, levels in zip(self.books[m.symbol], (m.bids, m.asks), strict=True):
                for p, q in levels:
                    if q:
                        side[p] = q
                    else:
                        side.pop(p, None)

    def levels(self, symbol: str) -> tuple[list, list]:
        bids, asks = self.books[symbol]
        return ref_sorted(bids, True), ref_sorted(asks, False)


def make(spec: FeedSpec, c: VenueConfig) -> FeedCore:
    core = FeedCore(spec, c, resolve_options(spec, c), sess=1)
    core.start(0)
    return core


def test_v2_recording_through_the_core_equals_reference_on_the_bus() -> None:
    """The real v2 recording through FeedCore: it subscribes with exactly the frame the recorder
    sent; every symbol goes live on its initial book; after every frame the books rebuilt from the
    bus equal the plain-dict reference level by level; no resync, no drop."""
    path = recorded("gemini") / "GEMINI.ws.1.0"
    lines = path.read_text(encoding="utf-8").split("\n")
    sent = [ln.split(": ", 1)[1] for ln in lines if " <- " in ln]
    received = [ln.partition(": ")[2] for ln in lines if ln and ln[0].isdigit()]
    core = make(spec_v2.SPEC, cfg(RECORDED_SYMBOLS, "wss://api.gemini.com/v2/marketdata/"))
    sub = Subscriber()
    core.connected(0.0, 0)
    assert core.take_actions() == [Send(sent)]
    sub.take(core)
    assert set(sub.status.values()) == {SYNCING}
    ref: dict[str, tuple[dict, dict]] = {}
    compared = 0
    for i, text in enumerate(received):
        core.frame(text, i, 1.0 + i / 100)
        sub.take(core)
        m = json.loads(text)
        if m["type"] != "l2_updates":
            continue
        sym = {s.replace("/", ""): s for s in RECORDED_SYMBOLS}[m["symbol"]]
        if "trades" in m:
            ref[sym] = ({}, {})
        for side, p, q in m["changes"]:
            d = ref[sym][0 if side == "buy" else 1]
            if D(q) == 0:
                d.pop(D(p), None)
            else:
                d[D(p)] = D(q)
        assert sub.levels(sym) == (ref_sorted(ref[sym][0], True), ref_sorted(ref[sym][1], False)), sym
        compared += 1
    core.tick(100.0, 0)
    assert core.take_actions() == []
    assert set(sub.status.values()) == {LIVE} and set(sub.status) == set(RECORDED_SYMBOLS)
    counters = dict(core.counters)
    print(f"\ngemini v2 through FeedCore: {compared} messages compared on the bus, {sub.snaps} snaps, "
          f"{sub.deltas} deltas, counters {counters}")
    assert (compared, sub.snaps, sub.deltas) == (655, 10, 645)
    assert counters == {"syncs": 10, "heartbeat_replies": 7}


def ws_core() -> tuple[FeedCore, Subscriber]:
    core = make(spec_ws.SPEC, cfg(("BTC/USD", "ETH/USD"), "wss://ws.gemini.com"))
    return core, Subscriber()


def depth(sym: str, first: int, last: int, bids: list, asks: list) -> str:
    return json.dumps({"e": "depthUpdate", "E": 1_700_000_000_000_000_000 + last, "s": sym, "U": first, "u": last,
                       "b": bids, "a": asks})


def test_ws_reconnect_through_the_core_leaves_no_ghost_level() -> None:
    """Through FeedCore: the first depthUpdate after connecting publishes the whole book; after a
    dropped connection the symbols are not live, and the new connection's first event replaces
    the book, so a level removed while disconnected is not on the bus."""
    core, sub = ws_core()
    core.connected(0.0, 0)
    assert core.take_actions() == [Send(['{"id":1,"method":"SUBSCRIBE","params":["btcusd@depth@100ms"]}',
                                         '{"id":2,"method":"SUBSCRIBE","params":["ethusd@depth@100ms"]}'])]
    core.frame('{"id":1,"status":200,"result":null}', 0, 0.1)
    core.frame(depth("btcusd", 1, 50, [["100", "1"], ["99", "2"]], [["101", "1"], ["102", "3"]]), 0, 0.2)
    core.frame(depth("ethusd", 7, 9, [["10", "1"]], [["11", "1"]]), 0, 0.2)
    core.frame(depth("btcusd", 51, 51, [["98", "5"]], [["101", "0"]]), 0, 0.3)
    sub.take(core)
    assert sub.levels("BTC/USD") == ([(D(100), D(1)), (D(99), D(2)), (D(98), D(5))], [(D(102), D(3))])
    core.disconnected(SYNCING, "connection closed", 0)
    sub.take(core)
    assert sub.status == {"BTC/USD": SYNCING, "ETH/USD": SYNCING} and sub.books == {}
    core.connected(5.0, 0)
    core.take_actions()
    # While we were away the 99 bid and the 102 ask went: the new book lacks them.
    core.frame(depth("btcusd", 700, 700, [["100", "1"], ["98", "5"]], [["103", "1"]]), 0, 5.1)
    core.frame(depth("btcusd", 701, 701, [["97", "1"]], []), 0, 5.2)
    sub.take(core)
    assert sub.status["BTC/USD"] == LIVE and sub.status["ETH/USD"] == SYNCING
    assert sub.levels("BTC/USD") == ([(D(100), D(1)), (D(98), D(5)), (D(97), D(1))], [(D(103), D(1))])
    assert core.take_actions() == []


def test_ws_gap_reconnects_and_ignores_the_old_connection() -> None:
    """A skipped id: the symbol goes syncing and the core asks for a new connection; frames still
    arriving on the old one are ignored (never taken for a book)."""
    core, sub = ws_core()
    core.connected(0.0, 0)
    core.take_actions()
    core.frame(depth("btcusd", 1, 10, [["100", "1"]], [["101", "1"]]), 0, 0.1)
    core.frame(depth("ethusd", 1, 1, [["10", "1"]], [["11", "1"]]), 0, 0.1)
    core.frame(depth("btcusd", 12, 12, [["100", "2"]], []), 0, 0.2)
    sub.take(core)
    actions = core.take_actions()
    assert len(actions) == 1 and isinstance(actions[0], Reconnect) and actions[0].status == SYNCING
    assert "gap before u 12" in actions[0].reason
    assert sub.status == {"BTC/USD": SYNCING, "ETH/USD": LIVE}
    core.frame(depth("btcusd", 13, 13, [["99", "1"]], []), 0, 0.3)
    sub.take(core)
    assert core.counters["gaps"] == 1 and core.counters["ignored_after_reconnect"] == 1
    assert "BTC/USD" not in sub.books


def test_ws_missing_initial_book_times_out_and_reconnects() -> None:
    """A symbol whose first depthUpdate never comes: after snapshot_timeout the core reconnects."""
    core, sub = ws_core()
    core.connected(0.0, 0)
    core.take_actions()
    core.frame(depth("ethusd", 1, 1, [["10", "1"]], [["11", "1"]]), 0, 1.0)
    core.tick(spec_ws.SNAPSHOT_TIMEOUT - 0.5, 0)
    assert core.take_actions() == []
    core.tick(spec_ws.SNAPSHOT_TIMEOUT + 0.5, 0)
    actions = core.take_actions()
    assert len(actions) == 1 and isinstance(actions[0], Reconnect)
    assert "BTC/USD: no book within 15 s" in actions[0].reason
    assert core.counters["snapshot_timeouts"] == 1
    sub.take(core)
    assert sub.status == {"BTC/USD": SYNCING, "ETH/USD": LIVE}


def test_ws_refused_symbol_goes_down_and_the_others_go_on() -> None:
    """A status-400 answer naming a stream marks that symbol down; the other symbol, subscribed by
    its own request, goes live; no reconnect."""
    core, sub = ws_core()
    core.connected(0.0, 0)
    core.take_actions()
    core.frame('{"id":2,"status":400,"error":{"code":-1013,"msg":"Invalid stream: ethusd@depth@100ms"}}', 0, 0.1)
    core.frame(depth("btcusd", 1, 1, [["100", "1"]], [["101", "1"]]), 0, 0.2)
    core.tick(60.0, 0)
    sub.take(core)
    assert sub.status == {"BTC/USD": LIVE, "ETH/USD": DOWN}
    assert core.take_actions() == []


def test_ws_malformed_update_resyncs_by_reconnecting() -> None:
    """A depthUpdate that does not parse may have carried a change: its symbol resyncs, which for
    this API means a new connection."""
    core, sub = ws_core()
    core.connected(0.0, 0)
    core.take_actions()
    core.frame(depth("btcusd", 1, 1, [["100", "1"]], [["101", "1"]]), 0, 0.1)
    core.frame(depth("btcusd", 2, 2, [["100", "NaN"]], []), 0, 0.2)
    sub.take(core)
    actions = core.take_actions()
    assert len(actions) == 1 and isinstance(actions[0], Reconnect)
    assert sub.status["BTC/USD"] == SYNCING and core.counters["resync_malformed"] == 1
