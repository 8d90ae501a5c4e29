"""Gemini: the real market data v2 recording replayed through the real v2 parser, sequencer and
Book, compared with an independent plain-dict reference after every message (and with the
recording's trades); the WebSocket API's parser and sync rule on frames in the documented shapes
(the initial book replaces the old one, U/u contiguity, gaps, stale events); malformed input; the
pair check on the real REST answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from common.book import ASK, BID, Book
from common.config import VenueConfig
from common.feed.spec import RECONNECT, STREAM, FeedSpec, Sequencer
from common.feed.sync import StreamSequencer
from common.feed.types import Control, ControlKind, DepthEvent, Frame, PairInfo, ParseError, Snapshot, Verdict
from services.feed_gemini import pairs, parse_v2, parse_ws, spec_v2, spec_ws
from services.feed_gemini.sync import GeminiSequencer
from tests.replay_util import read_http, read_ws, recorded, ref_sorted

D = Decimal

# Oracle per recorded symbol (from the recording, by hand): levels of the initial book (bids, asks),
# how many later l2_updates it gets, the final best bid / best ask, final level counts.
EXPECTED = {
    "ALCXUSD": ((133, 26), 21, ("302.75", "303.33"), (135, 28)),
    "ANKRUSD": ((142, 82), 106, ("0.08", "0.08027"), (142, 81)),
    "GRTUSD": ((212, 467), 75, ("0.6173", "0.6201"), (211, 466)),
    "LTCETH": ((30, 161), 2, ("0.0655", "0.0658"), (30, 160)),
    "ETHEUR": ((31, 244), 55, ("1648.98", "1661.57"), (32, 243)),
    "BATBTC": ((16, 66), 46, ("0.00001613", "0.00001758"), (16, 66)),
    "ZECLTC": ((24, 39), 6, ("0.858", "0.897"), (24, 38)),
    "FILUSD": ((182, 476), 167, ("58.6448", "58.7256"), (179, 474)),
    "LINKETH": ((26, 34), 15, ("0.0093213", "0.0093512"), (26, 34)),
    "BTCGBP": ((99, 148), 152, ("24175.82", "24204.04"), (99, 148)),
}


def cfg(ws_url: str = "wss://ws.gemini.com", options: dict | None = None) -> VenueConfig:
    return VenueConfig(id="gemini", kind="gemini", enabled=True, symbols=("BTC/USD",), ws_url=ws_url,
                       rest_url="https://127.0.0.1:9/", pub="inproc://p", ctl="inproc://c", stale_after=5.0,
                       depth=5000, taker_fee=Decimal(0), cpu=None, options=options or {})


# --- a stand-in for the core's documented handling of STREAM venues ----------------------------


@dataclass
class Sym:
    seqr: Sequencer
    book: Book = field(default_factory=Book)
    verdicts: list[Verdict] = field(default_factory=list)


@dataclass
class Driven:
    """What the frames did, symbol by symbol, plus every control frame."""

    spec: FeedSpec
    syms: dict[str, Sym] = field(default_factory=dict)
    controls: list[Control] = field(default_factory=list)
    reconnects: int = 0

    def sym(self, key: str) -> Sym:
        if key not in self.syms:
            self.syms[key] = Sym(self.spec.sequencer())
        return self.syms[key]

    def reconnect(self) -> None:
        """A new connection: every sequencer of it is reset; the books stay until their initial
        book replaces them (so a merge instead of a replace would show as a ghost level)."""
        self.reconnects += 1
        for s in self.syms.values():
            s.seqr.reset()

    def feed(self, text: str) -> list[Frame]:
        """One frame, as the contract says the core handles it: a Snapshot that the sequencer
        calls SYNCED replaces the book; an event is applied on APPLY, replaces the book on
        SNAPSHOT, voids it on GAP."""
        out = self.spec.parse_frame(text)
        items = out if isinstance(out, list) else [out]
        for it in items:
            if isinstance(it, Snapshot):
                s = self.sym(it.key)
                verdict, events = s.seqr.on_snapshot(it)
                s.verdicts.append(verdict)
                assert verdict is Verdict.SYNCED and events == []
                s.book.load(it.bids, it.asks)
            elif isinstance(it, DepthEvent):
                s = self.sym(it.key)
                v = s.seqr.on_event(it)
                s.verdicts.append(v)
                if v is Verdict.SNAPSHOT:
                    s.book.load(it.bids, it.asks)
                elif v is Verdict.APPLY:
                    s.book.apply_levels(it.bids, it.asks)
                elif v is Verdict.GAP:
                    s.book.clear()
            elif isinstance(it, Control):
                self.controls.append(it)
        return items


# --- the independent reference: stdlib json, plain dicts, Decimal ----------------------------


class RefBook:
    """Gemini v2 by hand: an initial l2_updates (with ``trades``) starts a fresh book."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}

    def apply(self, m: dict) -> str:
        sym = m["symbol"]
        if "trades" in m or "auction_events" in m:
            self.books[sym] = ({}, {})
        bids, asks = self.books[sym]
        for side, p, q in m["changes"]:
            d = bids if side == "buy" else asks
            if Decimal(q) == 0:
                d.pop(Decimal(p), None)
            else:
                d[Decimal(p)] = Decimal(q)
        return sym

    def levels(self, sym: str) -> tuple[list, list]:
        bids, asks = self.books[sym]
        return ref_sorted(bids, True), ref_sorted(asks, False)


def recording() -> list[str]:
    return [fr.text for fr in read_ws(recorded("gemini") / "GEMINI.ws.1.0")]


# --- v2: the real recording ---------------------------------------------------------------


def test_v2_recording_book_equals_reference_after_every_message() -> None:
    """Every l2_updates of the recording goes through the real v2 parser, StreamSequencer and
    Book; after each one the symbol's book equals the plain-dict reference level by level, is
    never crossed, and holds no zero; the per-symbol oracle (book sizes, updates, final best
    prices) matches."""
    frames = recording()
    drv, ref = Driven(spec_v2.SPEC), RefBook()
    compared = 0
    kinds: dict[str, int] = {}
    for text in frames:
        m = json.loads(text)
        kinds[m["type"]] = kinds.get(m["type"], 0) + 1
        items = drv.feed(text)
        if m["type"] != "l2_updates":
            assert [type(i) for i in items] == [Control]
            continue
        sym = ref.apply(m)
        book = drv.syms[sym].book
        assert (book.levels(BID), book.levels(ASK)) == ref.levels(sym), sym
        book.check()
        assert not book.crossed(), sym
        compared += 1
    print(f"\ngemini v2 replay: {compared} messages compared level by level, {kinds}")
    assert kinds == {"l2_updates": 655, "trade": 16, "heartbeat": 7}
    assert compared == 655
    assert set(drv.syms) == set(EXPECTED)
    for sym, (_, n_updates, (bb, ba), final_sizes) in EXPECTED.items():
        s = drv.syms[sym]
        assert s.verdicts == [Verdict.SYNCED] + [Verdict.APPLY] * n_updates, sym
        (best_bid, _), (best_ask, _) = s.book.best()  # type: ignore[misc]
        assert (best_bid, best_ask) == (D(bb), D(ba)), sym
        assert (len(s.book.bids), len(s.book.asks)) == final_sizes, sym
    first = {}
    for text in frames:
        it = parse_v2.parse_frame(text)
        if isinstance(it, Snapshot) and it.key not in first:
            first[it.key] = (len(it.bids), len(it.asks))
    assert first == {sym: e[0] for sym, e in EXPECTED.items()}
    assert [c.kind for c in drv.controls].count(ControlKind.HEARTBEAT) == 7
    assert [c.kind for c in drv.controls].count(ControlKind.IGNORE) == 16


def test_v2_recording_trades_hit_levels_the_book_holds() -> None:
    """The recording's trades are truth independent of the book code: a trade whose taker buys
    at P fills resting asks at P, so when the trade message arrives (in this recording it always
    precedes the l2_updates that removes the filled quantity) the replayed book must hold an ask
    at exactly P with at least the quantity traded there so far, best ask <= P and best bid < P
    (mirror for a taker sell). The next change at that level leaves at most the rest."""
    drv = Driven(spec_v2.SPEC)
    pending: dict[tuple[str, int, Decimal], tuple[Decimal, Decimal]] = {}
    checked_trades, checked_levels, exact_rest = 0, 0, 0
    for text in recording():
        m = json.loads(text)
        if m["type"] == "l2_updates" and "trades" not in m:
            for side, p, q in m["changes"]:
                k = (m["symbol"], BID if side == "buy" else ASK, D(p))
                if k in pending:
                    before, traded = pending.pop(k)
                    assert D(q) <= before - traded, k
                    checked_levels += 1
                    exact_rest += D(q) == before - traded
        drv.feed(text)
        if m["type"] != "trade":
            continue
        book = drv.syms[m["symbol"]].book
        price, qty = D(m["price"]), D(m["quantity"])
        side = ASK if m["side"] == "buy" else BID
        levels = dict(book.levels(side))
        k = (m["symbol"], side, price)
        before, traded = pending.get(k, (levels.get(price, D(0)), D(0)))
        assert price in levels and levels[price] >= traded + qty, (k, levels.get(price))
        pending[k] = (before, traded + qty)
        (bid, _), (ask, _) = book.best()  # type: ignore[misc]
        assert (ask <= price and bid < price) if side == ASK else (bid >= price and ask > price), k
        checked_trades += 1
    print(f"\ngemini v2 trades: {checked_trades} trades hit a held level; {checked_levels} levels "
          f"re-checked after, {exact_rest} left exactly the untraded rest")
    assert (checked_trades, checked_levels, exact_rest, pending) == (16, 12, 11, {})


def test_v2_reconnect_initial_book_replaces_the_old_one() -> None:
    """After a reconnect the new initial l2_updates (marked by trades or auction_events) is a
    Snapshot and replaces the whole book: a level the old book held and the new one lacks is
    gone (ccxt #29210 merged it and kept ghost levels); updates before it are dropped."""
    frames = recording()
    drv = Driven(spec_v2.SPEC)
    for text in frames:
        drv.feed(text)
    old = drv.syms["FILUSD"].book
    (ghost_bid, _), (ghost_ask, _) = old.best()  # type: ignore[misc]
    drv.reconnect()
    late = drv.feed('{"type":"l2_updates","symbol":"FILUSD","changes":[["buy","58.1","1"]]}')
    assert drv.syms["FILUSD"].verdicts[-1] is Verdict.DROP and isinstance(late[0], DepthEvent)
    for marker in ('"trades":[]', '"auction_events":[]'):
        drv.feed('{"type":"l2_updates","symbol":"FILUSD","changes":[["buy","58.5","2.5"],["sell","58.9","1"],'
                 '["sell","59.0","0"]],' + marker + "}")
        book = drv.syms["FILUSD"].book
        assert drv.syms["FILUSD"].verdicts[-1] is Verdict.SYNCED
        assert book.levels(BID) == [(D("58.5"), D("2.5"))] and book.levels(ASK) == [(D("58.9"), D(1))]
        assert ghost_bid not in book.bids and ghost_ask not in book.asks


def test_v2_resync_is_reconnect_and_stream_snapshot() -> None:
    """v2's book comes only with a connection's initial response: resync reconnects."""
    assert (spec_v2.SPEC.snapshot, spec_v2.SPEC.resync, spec_v2.SPEC.conn_seq) == (STREAM, RECONNECT, False)
    assert spec_v2.SPEC.sequencer is StreamSequencer and spec_v2.SPEC.checksum is None
    assert spec_v2.SPEC.resync_on_crossed and spec_v2.SPEC.snapshot_timeout == spec_ws.SNAPSHOT_TIMEOUT
    c = cfg("wss://api.gemini.com/v2/marketdata")
    assert spec_v2.ws_url(c, ["BTCUSD"]) == "wss://api.gemini.com/v2/marketdata"
    assert spec_v2.subscribe(c, ["BTCUSD", "ETHUSD"]) == [
        '{"type":"subscribe","subscriptions":[{"name":"l2","symbols":["BTCUSD","ETHUSD"]}]}']
    assert spec_v2.subscribe(c, []) == []
    assert spec_v2.SPEC.key_of("BTC/USD") == "BTCUSD"


def test_v2_frames_exact() -> None:
    assert parse_v2.parse_frame('{"type":"l2_updates","symbol":"BTCUSD","changes":[["sell","9160.20",'
                                '"0.1921229751"],["buy","9122.04","0"]]}') == \
        DepthEvent("BTCUSD", 0, 0, 0, [(D("9122.04"), D(0))], [(D("9160.20"), D("0.1921229751"))])
    assert parse_v2.parse_frame('{"type":"l2_updates","symbol":"btcusd","changes":[["buy","1","2"]],'
                                '"trades":[{"type":"trade"}],"auction_events":[]}') == \
        Snapshot("BTCUSD", 0, 0, [(D(1), D(2))], [])
    assert parse_v2.parse_frame('{"type":"heartbeat","timestamp":1624493666869}') == \
        Control(ControlKind.HEARTBEAT, "heartbeat")
    for t in ("trade", "auction_open", "auction_indicative", "auction_result", "candles_1m_updates"):
        assert ctl(parse_v2.parse_frame, f'{{"type":"{t}","symbol":"BTCUSD"}}').kind is ControlKind.IGNORE
    err = parse_v2.parse_frame('{"result":"error","reason":"InvalidJson","message":"bad"}')
    assert err == Control(ControlKind.ERROR, "InvalidJson: bad")
    assert ctl(parse_v2.parse_frame, '{"type":"error","reason":"x","message":"y"}').kind is ControlKind.ERROR


@pytest.mark.parametrize("changes", [
    '[["hold","1","1"]]', '[["buy","1"]]', '[["buy","1","1","x"]]', '[["buy","0","1"]]', '[["buy","1","-1"]]',
    '[["buy","NaN","1"]]', '[["buy",1.5,"1"]]', '[["sell","1","1e400"]]', '[["buy","1","1E-999999999"]]',
    '"x"', "null", '[null]', '{"buy":"1"}',
])
def test_v2_malformed_l2_update_names_the_symbol(changes: str) -> None:
    """A bad change in a symbol's l2_updates (initial or not) is a ParseError carrying the
    symbol (the core resyncs it); never another exception."""
    for extra in ("", ',"trades":[]'):
        with pytest.raises(ParseError) as ei:
            parse_v2.parse_frame('{"type":"l2_updates","symbol":"BTCUSD","changes":' + changes + extra + "}")
        assert ei.value.key == "BTCUSD"


@pytest.mark.parametrize("text", [
    '{"type":"l2_updates","changes":[]}', '{"type":"l2_updates","symbol":5,"changes":[]}',
    '{"type":"l2_updates","symbol":"","changes":[]}', '[]', '{"no":"type"}', '{"type":"l2_upd', '"x"', b"\xff",
])
def test_v2_malformed_without_a_symbol(text: str | bytes) -> None:
    with pytest.raises(ParseError) as ei:
        parse_v2.parse_frame(text)
    assert ei.value.key is None


# --- the WebSocket API (live default) -------------------------------------------------------


def ctl(parse: Callable[[str], object], text: str) -> Control:
    out = parse(text)
    assert isinstance(out, Control), out
    return out


def depth(sym: str, first: int, last: int, bids: Iterable = (), asks: Iterable = (), ets: int = 1) -> str:
    return json.dumps({"e": "depthUpdate", "E": ets, "s": sym, "U": first, "u": last,
                       "b": [list(x) for x in bids], "a": [list(x) for x in asks]})


def test_ws_spec_urls_and_subscribe() -> None:
    """snapshot=-1 is added to the configured URL (other query parameters kept); one SUBSCRIBE
    per symbol (a refused one cannot hold the others back), request ids 1..N."""
    assert spec_ws.ws_url(cfg(), ["btcusd"]) == "wss://ws.gemini.com?snapshot=-1"
    assert spec_ws.ws_url(cfg("ws://127.0.0.1:9/?a=1&snapshot=5"), ["btcusd"]) == \
        "ws://127.0.0.1:9/?a=1&snapshot=-1"
    assert spec_ws.subscribe(cfg(), ["btcusd", "ethusd"]) == [
        '{"id":1,"method":"SUBSCRIBE","params":["btcusd@depth@100ms"]}',
        '{"id":2,"method":"SUBSCRIBE","params":["ethusd@depth@100ms"]}']
    assert spec_ws.subscribe(cfg(), []) == []
    assert spec_ws.subscribe(cfg(options={"depth_speed": ""}), ["btcusd"]) == [
        '{"id":1,"method":"SUBSCRIBE","params":["btcusd@depth"]}']
    assert spec_ws.pairs_url(cfg()) == "https://127.0.0.1:9/v1/symbols"
    assert spec_ws.details_url(cfg(), "btcusd") == "https://127.0.0.1:9/v1/symbols/details/btcusd"
    s = spec_ws.SPEC
    assert (s.kind, s.snapshot, s.resync, s.sequencer, s.key_of("BTC/USD")) == \
        ("gemini", STREAM, RECONNECT, GeminiSequencer, "btcusd")
    assert s.checksum is None and not s.conn_seq and not s.truncate and s.depth_limit(cfg()) is None


def test_ws_depth_frame_exact() -> None:
    """E is nanoseconds already; s is lowercased; levels are exact decimals in wire order."""
    fr = parse_ws.parse_frame('{"e":"depthUpdate","E":1751508438600117161,"s":"BTCUSD","U":100,"u":105,'
                              '"b":[["45000.50","1.25000000"]],"a":[["45001.00","0"],["45002","0.5"]]}')
    assert fr == DepthEvent("btcusd", 100, 105, 1751508438600117161, [(D("45000.50"), D("1.25000000"))],
                            [(D("45001.00"), D(0)), (D(45002), D("0.5"))])


def test_ws_control_frames() -> None:
    """status 200 -> ACK; status 400 naming a stream or symbol -> SYMBOL_ERROR for it; other
    errors -> ERROR; book ticker and partial depth -> IGNORE."""
    assert parse_ws.parse_frame('{"id":1,"status":200,"result":null}') == \
        Control(ControlKind.ACK, "request id 1")
    e = ctl(parse_ws.parse_frame, '{"id":1,"status":400,"error":{"code":-1013,"msg":"Invalid stream: '
                             'foousd@depth@100ms"}}')
    assert (e.kind, e.key) == (ControlKind.SYMBOL_ERROR, "foousd")
    assert "-1013" in e.detail and "foousd@depth@100ms" in e.detail
    e = ctl(parse_ws.parse_frame, '{"id":1,"status":400,"error":{"code":-1013,"msg":"Unknown symbol: FOOUSD"}}')
    assert (e.kind, e.key) == (ControlKind.SYMBOL_ERROR, "foousd")
    e = ctl(parse_ws.parse_frame, '{"id":1,"status":400,"error":{"code":-1013,"msg":"Invalid parameters"}}')
    assert e == Control(ControlKind.ERROR, "status 400 code -1013: Invalid parameters")
    e = ctl(parse_ws.parse_frame, '{"id":7,"status":429,"error":{"code":-1003,"msg":"Rate limit exceeded"}}')
    assert (e.kind, e.key) == (ControlKind.ERROR, None)
    assert ctl(parse_ws.parse_frame, '{"u":1751505576085,"E":1751508438600117161,"s":"btcusd","b":"45000.50",'
                                '"B":"1.25","a":"45001.00","A":"0.75"}').kind is ControlKind.IGNORE
    assert ctl(parse_ws.parse_frame, '{"lastUpdateId":12345678,"bids":[],"asks":[]}').kind is ControlKind.IGNORE
    assert parse_ws.parse_frame('{"e":"trade","s":"btcusd"}') == Control(ControlKind.IGNORE, "trade")
    wrapped = parse_ws.parse_frame('{"stream":"btcusd@depth@100ms","data":' + depth("btcusd", 1, 2) + "}")
    assert isinstance(wrapped, DepthEvent) and (wrapped.key, wrapped.first, wrapped.last) == ("btcusd", 1, 2)


@pytest.mark.parametrize("bad", [
    '"b":[["0.1","NaN"]]', '"b":[["0.1","-1"]]', '"b":[["0.1",1.5]]', '"b":[["0","1"]]', '"b":[["0.1"]]',
    '"b":[["1e30","1"]]', '"b":"x"', '"U":"5"', '"U":-1', '"u":true', '"U":9', '"E":-5', '"E":1.5',
    '"E":9223372036854775808',
])
def test_ws_malformed_depth_event_names_the_symbol(bad: str) -> None:
    """A depthUpdate with a bad field is a ParseError carrying its symbol (-> resync it)."""
    doc = {"e": "depthUpdate", "E": 1, "s": "btcusd", "U": 5, "u": 6, "b": [], "a": []}
    doc.update(json.loads("{" + bad + "}"))
    with pytest.raises(ParseError) as ei:
        parse_ws.parse_frame(json.dumps(doc))
    assert ei.value.key == "btcusd"


@pytest.mark.parametrize("text", [
    '{"e":"depthUpdate","U":1,"u":1,"b":[],"a":[]}', '{"id":1,"status":"ok"}', '{"id":1,"status":true}',
    '{"what":1}', "[]", "{", "", b"\xfe\xff", '{"stream":5,"data":{}}',
])
def test_ws_malformed_without_a_symbol(text: str | bytes) -> None:
    with pytest.raises(ParseError) as ei:
        parse_ws.parse_frame(text)
    assert ei.value.key is None


def test_ws_malformed_wrapped_depth_names_the_symbol_from_the_stream() -> None:
    with pytest.raises(ParseError) as ei:
        parse_ws.parse_frame('{"stream":"btcusd@depth@100ms","data":{"e":"depthUpdate","U":7,"u":6,"b":[],"a":[]}}')
    assert ei.value.key == "btcusd"
    with pytest.raises(ParseError) as ei:
        parse_ws.parse_frame('{"stream":"btcusd@depth","data":{"e":"bookTicker"}}')
    assert ei.value.key == "btcusd"


# --- the WebSocket API's sync rule ----------------------------------------------------------


def ev(first: int, last: int) -> DepthEvent:
    return DepthEvent("btcusd", first, last, 0, [], [])


def test_first_event_after_reset_is_the_book() -> None:
    s = GeminiSequencer()
    assert s.waiting_for_book and s.position is None and s.buffered == 0
    assert s.on_event(ev(1000, 1000)) is Verdict.SNAPSHOT
    assert s.position == 1000 and not s.waiting_for_book


def test_contiguous_events_apply_stale_and_duplicates_drop() -> None:
    """U == previous u + 1 applies; u <= id (stale, duplicate) drops without moving the id."""
    s = GeminiSequencer()
    s.on_event(ev(90, 100))
    assert s.on_event(ev(101, 101)) is Verdict.APPLY
    assert s.on_event(ev(102, 110)) is Verdict.APPLY
    assert s.on_event(ev(95, 100)) is Verdict.DROP     # stale
    assert s.on_event(ev(102, 110)) is Verdict.DROP    # duplicate
    assert s.on_event(ev(111, 111)) is Verdict.APPLY
    assert s.position == 111


@pytest.mark.parametrize("first,last", [(113, 115), (200, 300), (105, 112)])
def test_gap_or_overlap_is_a_gap_and_voids_until_reset(first: int, last: int) -> None:
    """U > id + 1 (missed updates) or U <= id < u (an undocumented overlap) is a GAP; every
    later event on that connection is dropped, even one that looks contiguous, because the next
    event after a gap is a diff and not a book; after a reset the first event is the book."""
    s = GeminiSequencer()
    s.on_event(ev(1, 111))
    assert s.on_event(ev(first, last)) is Verdict.GAP
    assert s.position is None and not s.waiting_for_book
    assert s.on_event(ev(last + 1, last + 1)) is Verdict.DROP
    assert s.on_event(ev(112, 112)) is Verdict.DROP
    s.reset()
    assert s.on_event(ev(5000, 5003)) is Verdict.SNAPSHOT
    assert s.on_event(ev(5004, 5004)) is Verdict.APPLY


def test_reset_while_live_takes_the_next_event_as_the_book() -> None:
    """A reconnect without a gap: the new connection's first event is the book, whatever its ids
    (they may even be lower: a new connection)."""
    s = GeminiSequencer()
    s.on_event(ev(1, 50))
    s.reset()
    assert s.on_event(ev(10, 10)) is Verdict.SNAPSHOT and s.position == 10
    assert s.on_event(ev(11, 12)) is Verdict.APPLY


def test_on_snapshot_syncs_at_its_id() -> None:
    s = GeminiSequencer()
    assert s.on_snapshot(Snapshot("btcusd", 40, 0, [], [])) == (Verdict.SYNCED, [])
    assert s.on_event(ev(41, 41)) is Verdict.APPLY


def test_ws_reconnect_replaces_the_book_no_ghost_level() -> None:
    """Frames in the documented shapes through the real parser, sequencer and Book: the first
    event is the book; diffs apply; after a reconnect the new first event REPLACES the book, so
    a level removed while we were disconnected (absent from the new book) does not survive."""
    drv = Driven(spec_ws.SPEC)
    drv.feed(depth("btcusd", 1, 100, [("100", "1"), ("99", "2"), ("98", "3")], [("101", "1"), ("102", "2")]))
    drv.feed(depth("btcusd", 101, 103, [("99", "0"), ("97", "4")], [("101", "0.5")]))
    book = drv.syms["btcusd"].book
    assert book.levels(BID) == [(D(100), D(1)), (D(98), D(3)), (D(97), D(4))]
    assert book.levels(ASK) == [(D(101), D("0.5")), (D(102), D(2))]
    drv.reconnect()
    # While we were away the 98 bid and the 102 ask were removed: the new book lacks them.
    drv.feed(depth("btcusd", 900, 900, [("100", "1.5"), ("97", "4")], [("101", "0.5"), ("103", "7")]))
    assert drv.syms["btcusd"].verdicts == [Verdict.SNAPSHOT, Verdict.APPLY, Verdict.SNAPSHOT]
    assert book.levels(BID) == [(D(100), D("1.5")), (D(97), D(4))]
    assert book.levels(ASK) == [(D(101), D("0.5")), (D(103), D(7))]
    drv.feed(depth("btcusd", 901, 902, [("96", "1")], [("103", "0")]))
    assert book.levels(BID) == [(D(100), D("1.5")), (D(97), D(4)), (D(96), D(1))]
    assert book.levels(ASK) == [(D(101), D("0.5"))]


def test_ws_gap_voids_the_book_until_the_reconnect_brings_a_new_one() -> None:
    """A skipped id voids the book (the core reconnects); diffs still arriving on the old
    connection are dropped, never mistaken for a book; the new connection's first event is."""
    drv = Driven(spec_ws.SPEC)
    drv.feed(depth("btcusd", 1, 10, [("100", "1")], [("101", "1")]))
    drv.feed(depth("btcusd", 12, 12, [("100", "2")]))              # 11 missed
    drv.feed(depth("btcusd", 13, 13, [("99", "5")], []))
    s = drv.syms["btcusd"]
    assert s.verdicts == [Verdict.SNAPSHOT, Verdict.GAP, Verdict.DROP] and len(s.book) == 0
    drv.reconnect()
    drv.feed(depth("btcusd", 20, 20, [("100", "3")], [("102", "1")]))
    assert s.verdicts[-1] is Verdict.SNAPSHOT
    assert (s.book.levels(BID), s.book.levels(ASK)) == ([(D(100), D(3))], [(D(102), D(1))])


def test_ws_symbols_are_independent() -> None:
    """A gap of one symbol does not touch another's sequence (the reconnect will, by design)."""
    drv = Driven(spec_ws.SPEC)
    drv.feed(depth("btcusd", 1, 1, [("1", "1")]))
    drv.feed(depth("ethusd", 7, 7, [("2", "1")]))
    drv.feed(depth("btcusd", 3, 3))
    drv.feed(depth("ethusd", 8, 8, [("2", "3")]))
    assert drv.syms["btcusd"].verdicts == [Verdict.SNAPSHOT, Verdict.GAP]
    assert drv.syms["ethusd"].verdicts == [Verdict.SNAPSHOT, Verdict.APPLY]
    assert drv.syms["ethusd"].book.levels(BID) == [(D(2), D(3))]


def test_ws_random_sequence_equals_reference() -> None:
    """A long documented-shape session (seeded, 3 symbols, reconnects) through parser, sequencer
    and Book equals a plain-dict reference that replaces each book at the first event after a
    reconnect and applies the rest."""
    import random

    rng = random.Random(9)
    drv = Driven(spec_ws.SPEC)
    ref: dict[str, tuple[dict, dict]] = {}
    ids = {"btcusd": 1000, "ethusd": 5, "solusd": 70}
    fresh = set(ids)
    for step in range(3000):
        if step % 700 == 699:
            drv.reconnect()
            fresh = set(ids)
        sym = rng.choice(sorted(ids))
        n = rng.randint(1, 3)
        bids = [(f"{rng.randint(90, 99)}.{rng.randint(0, 9)}", str(rng.choice([0, 0, 1, 2.5, 10]))) for _ in range(3)]
        asks = [(f"{rng.randint(101, 110)}.{rng.randint(0, 9)}", str(rng.choice([0, 1, 0.25, 3]))) for _ in range(3)]
        drv.feed(depth(sym, ids[sym] + 1, ids[sym] + n, bids, asks))
        ids[sym] += n
        if sym in fresh:
            fresh.discard(sym)
            ref[sym] = ({}, {})
        for side, lv in zip(ref[sym], (bids, asks), strict=True):
            for p, q in lv:
                if D(q) == 0:
                    side.pop(D(p), None)
                else:
                    side[D(p)] = D(q)
        book = drv.syms[sym].book
        assert (book.levels(BID), book.levels(ASK)) == (ref_sorted(ref[sym][0], True), ref_sorted(ref[sym][1], False))
    assert drv.reconnects == 4
    assert all(v is not Verdict.GAP and v is not Verdict.DROP for s in drv.syms.values() for v in s.verdicts)


# --- pair check on the real REST answers ----------------------------------------------------


def rest_answers() -> tuple[str, dict[str, str]]:
    recs = read_http(recorded("gemini") / "GEMINI.0")
    listing = [r.body for r in recs if r.url.endswith("/v1/symbols")]
    details = {r.url.rsplit("/", 1)[1]: r.body for r in recs if "/v1/symbols/details/" in r.url}
    assert len(listing) == 1
    return listing[0], details


def test_pair_list_is_looked_up_from_our_symbols_never_split() -> None:
    """The real /v1/symbols list (71 lowercase names): canonical symbols map to each API's key;
    names the list lacks are absent; nothing is enumerated by splitting."""
    listing, _ = rest_answers()
    ws, v2 = spec_ws.SPEC.parse_pairs(listing), spec_v2.SPEC.parse_pairs(listing)
    assert isinstance(ws, pairs.ListedSymbols) and len(ws.names) == 71
    assert ws["BTC/USD"] == PairInfo("BTC/USD", "btcusd", True, "listed")
    assert v2["BTC/USD"].key == "BTCUSD" and v2.get("1INCH/USD") is not None
    assert ws.get("BTC/USDT") is None and "XRP/USD" not in ws and ws.get("btcusd") is None
    assert list(ws) == [] and bool(ws) and not pairs.parse_symbols("[]", parse_ws.key_of)
    for bad in ('{"a":1}', '{"result":"error","reason":"x","message":"y"}', "nope"):
        with pytest.raises(ParseError):
            spec_ws.SPEC.parse_pairs(bad)
    assert pairs.parse_symbols('["btcusd",5,"BAD!",null,"ethusd"]', parse_ws.key_of).names == {"btcusd", "ethusd"}


def test_symbol_details_on_the_real_answers() -> None:
    """All 71 recorded details (one per listed name; the README says 70) parse; status decides
    trading (only closed has no book); ticks are exact decimals from JSON numbers like 1E-8; the
    name alone cannot tell BTC/GUSD from BTCG/USD, the details' currencies do."""
    _, details = rest_answers()
    assert len(details) == 71 and set(details) == set(json.loads(rest_answers()[0]))
    out = {name: pairs.parse_details(body, f"{json.loads(body)['base_currency']}/"
                                     f"{json.loads(body)['quote_currency']}", parse_ws.key_of)
           for name, body in details.items()}
    assert all(d is not None for d in out.values())
    btc = out["btcusd"]
    assert btc == pairs.Details(PairInfo("BTC/USD", "btcusd", True, "open"), D("0.01"), D("1E-8"))
    assert btc is not None and str(btc.qty_step) == "1E-8"
    statuses = {name: (d.info.status, d.info.trading) for name, d in out.items() if d}
    assert statuses["btcgusd"] == ("closed", False) and statuses["btcdai"] == ("limit_only", True)
    assert sorted({s for s, _ in statuses.values()}) == ["closed", "limit_only", "open"]
    assert pairs.parse_details(details["btcgusd"], "BTCG/USD", parse_ws.key_of) is None
    assert pairs.parse_details('{"result":"error","reason":"InvalidSymbol","message":"x"}', "FOO/USD",
                               parse_ws.key_of) is None
    assert spec_ws.parse_pair(details["btcusd"], "BTC/USD") == PairInfo("BTC/USD", "btcusd", True, "open")
    assert spec_v2.parse_pair(details["btcgusd"], "BTC/GUSD") == PairInfo("BTC/GUSD", "BTCGUSD", False, "closed")
    assert spec_v2.parse_pair(details["btcgusd"], "BTCG/USD") is None
    assert spec_v2.details_url(cfg(), "BTCUSD") == "https://127.0.0.1:9/v1/symbols/details/btcusd"
    for bad in ('{"result":"error","reason":"RateLimited","message":"x"}', '{"symbol":"ETHUSD","status":"open"}',
                "[]", "{", b"\xff"):
        with pytest.raises(ParseError) as ei:
            pairs.parse_details(bad, "BTC/USD", parse_ws.key_of)
        assert ei.value.key == "BTC/USD"
