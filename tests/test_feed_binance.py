"""Binance / Binance.US: parsing, the documented sync rule, and replays of the real recordings
compared with an independent dict-based reference book."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from common.book import ASK, BID, Book
from common.config import VenueConfig
from common.feed.types import ControlKind, DepthEvent, ParseError, Snapshot, Verdict
from services.feed_binance import parse
from services.feed_binance import spec as bspec
from services.feed_binance.sync import BinanceSequencer
from tests.replay_util import (
    read_http,
    read_ws,
    recorded,
    ref_apply,
    ref_levels,
    ref_sorted,
    replay,
)

FILES = {"binance": "BINANCE", "binance_us": "BINANCE_US"}

# Oracle per recorded symbol: snapshot lastUpdateId, the stale events that must be dropped (U, u),
# the first applied event (U, u) that straddles lastUpdateId + 1, and how many events apply.
EXPECTED = {
    "binance": {
        "NKNUSDT": (499869752, [(499869750, 499869752)], (499869753, 499869754), 149),
        "BLZETH": (281916627, [(281916627, 281916627)], (281916628, 281916628), 9),
        "LRCBTC": (259345543, [(259345536, 259345539), (259345540, 259345543)], (259345544, 259345545), 13),
        "RUNEEUR": (15602511, [(15602510, 15602511)], (15602512, 15602513), 1),
    },
    "binance_us": {
        "COMPUSDT": (113129219, [(113129219, 113129219)], (113129220, 113129220), 106),
        "OMGBUSD": (77819467, [(77819467, 77819467)], (77819468, 77819468), 158),
        "CRVUSDT": (1938834, [(1938833, 1938834)], (1938835, 1938836), 28),
        "ZRXUSDT": (96974986, [(96974986, 96974986)], (96974987, 96974988), 40),
    },
}


def load(venue: str):
    d = recorded(venue)
    frames = read_ws(d / f"{FILES[venue]}.ws.1.0")
    snaps = [(h.ts, h.url.split("symbol=")[1].split("&")[0], h.body)
             for h in read_http(d / f"{FILES[venue]}.http.0.0")]
    return frames, snaps


def reference(frames, snap_body: str, key: str, skip: set[tuple[int, int]] = frozenset(),
              upto: int | None = None) -> tuple[list, list]:
    """The book by hand: stdlib json, plain dicts, Decimal. Events of ``key`` with
    u > lastUpdateId are applied in order (asserting U == previous u + 1), up to u == ``upto``."""
    snap = json.loads(snap_body)
    bids, asks = ref_levels(snap["bids"]), ref_levels(snap["asks"])
    last = snap["lastUpdateId"]
    for fr in frames:
        m = json.loads(fr.text)
        d = m.get("data", {})
        if d.get("e") != "depthUpdate" or d["s"] != key or d["u"] <= last or (d["U"], d["u"]) in skip:
            continue
        if upto is not None and d["u"] > upto:
            break
        assert d["U"] <= last + 1 <= d["u"]
        ref_apply(bids, d["b"])
        ref_apply(asks, d["a"])
        last = d["u"]
    return ref_sorted(bids, True), ref_sorted(asks, False)


def assert_sane(book: Book) -> None:
    book.check()  # Decimal keys/values, every price and size > 0
    assert not book.crossed()
    assert all(q > 0 for _, q in book.levels(BID) + book.levels(ASK))


# --- replays of the real recordings ---------------------------------------------------------


@pytest.mark.parametrize("venue", ["binance", "binance_us"])
def test_recording_drops_stale_events_and_applies_the_straddling_one(venue: str) -> None:
    """Each symbol drops exactly its events with u <= lastUpdateId and first applies the event
    with U <= lastUpdateId + 1 <= u; no gap occurs in the recording."""
    frames, snaps = load(venue)
    result = replay(bspec.SPEC, frames, snaps)
    assert set(result) == set(EXPECTED[venue])
    for key, (last_id, dropped, first, n_applied) in EXPECTED[venue].items():
        st = result[key]
        assert st.synced and st.syncs == 1 and st.gaps == []
        assert [(e.first, e.last) for e in st.dropped] == dropped, key
        assert (st.applied[0].first, st.applied[0].last) == first, key
        assert st.applied[0].first <= last_id + 1 <= st.applied[0].last
        assert len(st.applied) == n_applied, key


@pytest.mark.parametrize("venue", ["binance", "binance_us"])
def test_recording_book_equals_reference(venue: str) -> None:
    """The replayed book equals the hand-computed book level by level, uncrossed, no zeros."""
    frames, snaps = load(venue)
    result = replay(bspec.SPEC, frames, snaps)
    for _, key, body in snaps:
        book = result[key].book
        ref_bids, ref_asks = reference(frames, body, key)
        assert book.levels(BID) == ref_bids, key
        assert book.levels(ASK) == ref_asks, key
        assert_sane(book)


@pytest.mark.parametrize("venue", ["binance", "binance_us"])
def test_deleting_one_depth_frame_is_a_gap_then_resync_gives_the_right_book(venue: str) -> None:
    """Remove one applied depth frame per symbol: the next event is reported as a gap (named by
    U/u), the book is voided (never a wrong book), and a fresh snapshot resyncs to the reference."""
    frames, snaps = load(venue)
    full = replay(bspec.SPEC, frames, snaps)
    for _, key, body in snaps:
        applied = full[key].applied
        if len(applied) < 3:
            continue
        victim, follower = applied[len(applied) // 2], applied[len(applied) // 2 + 1]
        cut = [f for f in frames if not (f'"s":"{key}"' in f.text and f'"U":{victim.first},' in f.text)]
        assert len(cut) == len(frames) - 1
        st = replay(bspec.SPEC, cut, snaps)[key]
        assert [(e.first, e.last) for e in st.gaps] == [(follower.first, follower.last)], key
        assert not st.synced and len(st.book) == 0
        # A snapshot cut right after the lost event is still "older than U_first" by the strict
        # rule (lastUpdateId < U): refetch. One cut after the gap event resyncs exactly.
        bids, asks = reference(frames, body, key, upto=victim.last)
        assert st.seqr.on_snapshot(Snapshot(key, victim.last, 0, bids, asks)) == (Verdict.REFETCH, [])
        bids, asks = reference(frames, body, key, upto=follower.last)
        snap = Snapshot(key, follower.last, 0, bids, asks)
        verdict, events = st.seqr.on_snapshot(snap)
        assert verdict is Verdict.SYNCED
        assert [e.last for e in events] == [e.last for e in applied if e.last > follower.last]
        book = Book()
        book.load(snap.bids, snap.asks)
        for ev in events:
            book.apply_levels(ev.bids, ev.asks)
        ref_bids, ref_asks = reference(frames, body, key)
        assert (book.levels(BID), book.levels(ASK)) == (ref_bids, ref_asks)
        assert_sane(book)


# --- the sequencer, branch by branch ---------------------------------------------------------


def ev(first: int, last: int) -> DepthEvent:
    return DepthEvent("BTCUSDT", first, last, 0, [], [])


def snap(last: int) -> Snapshot:
    return Snapshot("BTCUSDT", last, 0, [], [])


def test_events_before_a_snapshot_are_buffered() -> None:
    s = BinanceSequencer()
    assert s.on_event(ev(10, 12)) is Verdict.BUFFERED
    assert s.buffered == 1 and s.position is None


def test_snapshot_older_than_first_buffered_event_is_refetched_keeping_the_buffer() -> None:
    """lastUpdateId < U_first -> REFETCH (strictly less, as the procedure says)."""
    s = BinanceSequencer()
    s.on_event(ev(10, 12))
    assert s.on_snapshot(snap(9)) == (Verdict.REFETCH, [])
    assert s.buffered == 1
    verdict, events = s.on_snapshot(snap(10))
    assert verdict is Verdict.SYNCED and [(e.first, e.last) for e in events] == [(10, 12)]


def test_sync_drops_u_at_or_below_snapshot_and_applies_the_straddling_event() -> None:
    s = BinanceSequencer()
    for e in (ev(5, 8), ev(9, 10), ev(11, 14), ev(15, 15)):
        s.on_event(e)
    verdict, events = s.on_snapshot(snap(12))
    assert verdict is Verdict.SYNCED
    assert [(e.first, e.last) for e in events] == [(11, 14), (15, 15)]  # 11 <= 13 <= 14 straddles
    assert s.position == 15 and s.buffered == 0


def test_straddle_with_u_minus_u_not_matching_level_count_is_applied() -> None:
    """u - U + 1 is a count of engine updates, not levels: never checked."""
    s = BinanceSequencer()
    assert s.on_event(DepthEvent("BTCUSDT", 90, 150, 0, [(Decimal(1), Decimal(1))], [])) is Verdict.BUFFERED
    verdict, events = s.on_snapshot(snap(100))
    assert verdict is Verdict.SYNCED and [(e.first, e.last) for e in events] == [(90, 150)]


def test_hole_inside_the_buffer_is_a_gap_and_keeps_the_events_after_it() -> None:
    s = BinanceSequencer()
    for e in (ev(10, 12), ev(13, 14), ev(17, 18), ev(19, 19)):
        s.on_event(e)
    assert s.on_snapshot(snap(13)) == (Verdict.GAP, [])
    assert s.position is None and s.buffered == 2
    assert s.on_snapshot(snap(16)) == (Verdict.REFETCH, [])  # 16 < U_first 17
    verdict, events = s.on_snapshot(snap(18))
    assert verdict is Verdict.SYNCED and [(e.first, e.last) for e in events] == [(19, 19)]


def test_snapshot_with_empty_buffer_is_refused_until_an_event_proves_it_current() -> None:
    """Nothing buffered: a lagging REST answer could not be told apart, so fetch again."""
    s = BinanceSequencer()
    assert s.on_snapshot(snap(50)) == (Verdict.REFETCH, [])
    assert s.on_event(ev(53, 55)) is Verdict.BUFFERED
    assert s.on_snapshot(snap(50)) == (Verdict.REFETCH, [])   # 50 < U_first 53: the old answer
    verdict, events = s.on_snapshot(snap(54))
    assert verdict is Verdict.SYNCED and [(e.first, e.last) for e in events] == [(53, 55)]


def test_live_branches_apply_drop_duplicate_and_gap() -> None:
    s = BinanceSequencer()
    assert s.on_event(ev(99, 101)) is Verdict.BUFFERED
    verdict, events = s.on_snapshot(snap(100))
    assert verdict is Verdict.SYNCED and [(e.first, e.last) for e in events] == [(99, 101)]  # straddles 101
    assert s.on_event(ev(102, 103)) is Verdict.APPLY   # U == id + 1
    assert s.on_event(ev(90, 95)) is Verdict.DROP      # u < id: stale
    assert s.on_event(ev(102, 103)) is Verdict.DROP    # u == id: duplicate, already applied
    assert s.position == 103
    g = ev(105, 106)
    assert s.on_event(g) is Verdict.GAP                # U > id + 1: 104 missed
    assert s.position is None and s.buffered == 1      # the gap event starts the new buffer
    assert s.on_event(ev(107, 107)) is Verdict.BUFFERED


def test_reset_forgets_everything() -> None:
    s = BinanceSequencer()
    s.on_event(ev(1, 2))
    s.reset()
    assert s.buffered == 0 and s.position is None


def test_full_buffer_drops_the_oldest_event() -> None:
    s = BinanceSequencer(max_buffer=2)
    for e in (ev(1, 1), ev(2, 2), ev(3, 3)):
        s.on_event(e)
    assert s.buffered == 2
    assert s.on_snapshot(snap(1)) == (Verdict.REFETCH, [])  # U_first moved to 2


# --- parsing -------------------------------------------------------------------------------


def test_symbol_mapping() -> None:
    assert parse.key_of("BTC/USDT") == "BTCUSDT"
    assert parse.stream_of("BTCUSDT") == "btcusdt@depth@100ms"
    assert parse.stream_of("BTCUSDT", "") == "btcusdt@depth"
    pairs = parse.parse_pairs(b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC",'
                              b'"quoteAsset":"USDT"}]}')
    assert parse.symbol_of("btcusdt", pairs) == "BTC/USDT"
    assert parse.symbol_of("ETHUSDT", pairs) is None


def test_urls_come_from_config() -> None:
    cfg = VenueConfig(id="binance_us", kind="binance", enabled=True, symbols=("BTC/USDT",),
                      ws_url="ws://127.0.0.1:9/", rest_url="http://127.0.0.1:9", pub="inproc://p",
                      ctl="inproc://c", stale_after=5.0, depth=5000, taker_fee=Decimal(0), cpu=None)
    assert bspec.ws_url(cfg, ["BTCUSDT", "ETHUSDT"]) == \
        "ws://127.0.0.1:9/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
    assert bspec.snapshot_url(cfg, "BTCUSDT") == "http://127.0.0.1:9/api/v3/depth?symbol=BTCUSDT&limit=5000"
    assert bspec.pairs_url(cfg) == "http://127.0.0.1:9/api/v3/exchangeInfo"
    assert bspec.subscribe(cfg, ["BTCUSDT"]) == []


def test_parse_depth_frame_exact() -> None:
    fr = parse.parse_frame('{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512568,'
                           '"s":"NKNUSDT","U":499869753,"u":499869754,"b":[["0.35170000","4265.00000000"]],'
                           '"a":[["0.35290000","0.00000000"]]}}')
    assert fr == DepthEvent("NKNUSDT", 499869753, 499869754, 1633998512568_000_000,
                            [(Decimal("0.35170000"), Decimal("4265.00000000"))],
                            [(Decimal("0.35290000"), Decimal(0))])


def test_control_frames() -> None:
    assert parse.parse_frame('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}').kind \
        is ControlKind.RECONNECT
    assert parse.parse_frame('{"e":"serverShutdown","E":1}').kind is ControlKind.RECONNECT
    assert parse.parse_frame('{"result":null,"id":1}').kind is ControlKind.ACK
    assert parse.parse_frame('{"code":2,"msg":"Invalid request"}').kind is ControlKind.ERROR
    assert parse.parse_frame('{"stream":"nknusdt@bookTicker","data":{"u":1}}').kind is ControlKind.IGNORE


@pytest.mark.parametrize("bad", [
    '"b":[["0.1","NaN"]]', '"b":[["0.1","-1"]]', '"b":[["0.1",1.5]]', '"b":[["0","1"]]',
    '"b":[["0.1"]]', '"b":[["1e30","1"]]', '"b":"x"',
])
def test_bad_value_in_a_known_depth_event_names_the_symbol(bad: str) -> None:
    """A depth event with a bad level raises ParseError carrying the symbol (-> resync it)."""
    text = ('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":6,'
            + bad + ',"a":[]}}')
    with pytest.raises(ParseError) as ei:
        parse.parse_frame(text)
    assert ei.value.key == "BTCUSDT"


def test_bad_ids_name_the_symbol_from_the_stream_when_s_is_missing() -> None:
    with pytest.raises(ParseError) as ei:
        parse.parse_frame('{"stream":"btcusdt@depth","data":{"e":"depthUpdate","U":"5","u":6,"b":[],"a":[]}}')
    assert ei.value.key == "BTCUSDT"
    with pytest.raises(ParseError):
        parse.parse_frame('{"stream":"btcusdt@depth","data":{"e":"depthUpdate","s":"BTCUSDT","U":7,"u":6,'
                          '"b":[],"a":[]}}')


def test_snapshot_parse_and_errors() -> None:
    s = parse.parse_snapshot(b'{"lastUpdateId":7,"bids":[["4.00000000","431.00000000"]],"asks":[]}', "X")
    assert s == Snapshot("X", 7, 0, [(Decimal(4), Decimal(431))], [])
    for bad in (b'{"code":-1121,"msg":"Invalid symbol."}', b'{"lastUpdateId":-1,"bids":[],"asks":[]}',
                b'[]', b'{"lastUpdateId":1,"bids":[["1","x"]],"asks":[]}', b'{"lastUp'):
        with pytest.raises(ParseError):
            parse.parse_snapshot(bad, "X")


def test_pair_check_on_the_real_exchange_info() -> None:
    """The recorded exchangeInfo lists the recorded symbols as TRADING and a BREAK one as not
    trading; an unknown symbol is absent."""
    body = read_http(recorded("binance") / "BINANCE.0")[0].body
    pairs = parse.parse_pairs(body)
    assert pairs["NKN/USDT"].key == "NKNUSDT" and pairs["NKN/USDT"].trading
    assert pairs["RUNE/EUR"].trading and pairs["BTC/USDT"].key == "BTCUSDT"
    assert not pairs["BCC/BTC"].trading and pairs["BCC/BTC"].status == "BREAK"
    assert "FOO/BAR" not in pairs
    us = parse.parse_pairs(read_http(recorded("binance_us") / "BINANCE_US.0")[0].body)
    assert us["COMP/USDT"].trading and us["OMG/BUSD"].key == "OMGBUSD"
