"""Kraken v2 and v1: the CRC32 checksum (every official vector), the parsers (real frames and
malformed ones), the specs, and replays of the three real recordings through the real parser,
sequencer, book (truncated to the subscribed depth) and checksum, with every checksum verified
and the books compared level by level with an independent plain-dict reference."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from common import venues
from common.book import ASK, BID, Book
from common.config import ConfigError, VenueConfig
from common.feed.actions import Action, Send
from common.feed.core import FeedCore
from common.feed.runner import resolve_options
from common.feed.spec import RESUBSCRIBE, STREAM
from common.feed.sync import StreamSequencer
from common.feed.types import Control, ControlKind, DepthEvent, Frame, ParseError, Snapshot, Verdict
from common.schema import DOWN, LIVE, SNAP, SYNCING, HeartbeatMsg, StatusMsg
from services.feed_kraken import checksum as ck
from services.feed_kraken import pairs, parse_v1, parse_v2, spec_v1, spec_v2
from tests.replay_util import SHARED, read_http, read_ws, recorded

VECTORS = SHARED / "fixtures" / "kraken_checksum_examples.json"
WS50 = "KRAKEN.ws.50.0"
SDK_V1 = "python-kraken-sdk_orderbook-v1.json"
SDK_V2 = "python-kraken-sdk_orderbook-v2.json"
#: The instrument record of BTC/USD as the v2 ``instrument`` channel sends it (the SDK v2 file's
#: numbers were re-serialised by a float parser: this gives back the wire precision).
BTC_USD_INSTRUMENT = ('{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":"BTC/USD",'
                      '"base":"BTC","quote":"USD","status":"online","qty_precision":8,"qty_increment":0.00000001,'
                      '"price_precision":1,"cost_precision":5,"tick_size":0.1,"price_increment":0.1,'
                      '"qty_min":0.0001}]}}')


def vcfg(depth: int = 1000, venue_id: str = "kraken", url: str = "wss://ws.kraken.com/v2") -> VenueConfig:
    return VenueConfig(id=venue_id, kind="kraken", enabled=True, symbols=("BTC/USD", "DOGE/USD"), ws_url=url,
                       rest_url="https://api.kraken.com", pub="tcp://127.0.0.1:1", ctl="tcp://127.0.0.1:2",
                       stale_after=10.0, depth=depth, taker_fee=Decimal("0.0026"), cpu=None)


def items(out: Frame | list[Frame]) -> list[Frame]:
    return out if isinstance(out, list) else [out]


def kind(out: Frame | list[Frame]) -> ControlKind:
    assert isinstance(out, Control), out
    return out.kind


def book_of(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> Book:
    b = Book()
    b.load([(Decimal(p), Decimal(q)) for p, q in bids], [(Decimal(p), Decimal(q)) for p, q in asks])
    return b


def truncate(book: Book, depth: int) -> None:
    """What the core does after every applied message when ``spec.truncate``."""
    while len(book.bids) > depth:
        book.bids.popitem(0)
    while len(book.asks) > depth:
        book.asks.popitem(-1)


# --- the replay harness: the core's documented rule, in-process ---------------------------------


@dataclass
class Sym:
    seqr: StreamSequencer = field(default_factory=StreamSequencer)
    book: Book = field(default_factory=Book)
    verified: int = 0
    mismatches: list[str] = field(default_factory=list)
    snapshots: int = 0
    updates: int = 0
    dropped: int = 0


@dataclass
class Replay:
    """Parser -> StreamSequencer -> Book -> truncate(depth) -> checksum(book, precision), as the
    feed core does it (common/feed/spec.py and the feed brief): a Snapshot REPLACES the book; a
    mismatch voids that symbol alone (the core resubscribes it) until its next snapshot."""

    parse: Any
    depth: int
    syms: dict[str, Sym] = field(default_factory=dict)
    precision: dict[str, tuple[int, int]] = field(default_factory=dict)
    controls: list[Control] = field(default_factory=list)

    def feed(self, text: str) -> None:
        for f in items(self.parse(text)):
            if isinstance(f, Control):
                self.controls.append(f)
                if f.kind is ControlKind.INSTRUMENT:
                    assert f.key is not None and isinstance(f.value, tuple)
                    self.precision[f.key] = f.value
                continue
            assert isinstance(f, Snapshot | DepthEvent), f
            st = self.syms.setdefault(f.key, Sym())
            if isinstance(f, Snapshot):
                assert st.seqr.on_snapshot(f) == (Verdict.SYNCED, [])
                st.book.load(f.bids, f.asks)
                st.snapshots += 1
            else:
                v = st.seqr.on_event(f)
                if v is Verdict.DROP:
                    st.dropped += 1
                    continue
                assert v is Verdict.APPLY
                st.book.apply_levels(f.bids, f.asks)
                st.updates += 1
            truncate(st.book, self.depth)
            if f.checksum is not None:
                why = ck.mismatch(st.book, f.checksum, self.precision.get(f.key))
                if why is None:
                    st.verified += 1
                else:
                    st.mismatches.append(why)
                    st.seqr.reset()
                    st.book.clear()

    @property
    def verified(self) -> int:
        return sum(s.verified for s in self.syms.values())

    @property
    def mismatches(self) -> list[str]:
        return [m for s in self.syms.values() for m in s.mismatches]


def ws50_frames() -> list[str]:
    return [w.text for w in read_ws(recorded("kraken") / WS50)]


def sdk_v1_frames() -> list[str]:
    doc = json.loads((recorded("kraken") / SDK_V1).read_text())
    return [json.dumps(x) for x in doc["init"] + doc["updates"]]


def sdk_v2_frames() -> list[str]:
    doc = json.loads((recorded("kraken") / SDK_V2).read_text())
    return [json.dumps(x) for x in [doc["init"], *doc["updates"]]]


# --- independent reference: stdlib json, plain dicts of the wire TEXT, its own CRC ---------------


class RefBook:
    """A v1 book by hand: ``{Decimal price: (price text, qty text)}`` per side, truncated to
    ``depth``, its checksum computed from the raw wire strings (no Decimal formatting at all)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def apply(self, side: dict[Decimal, tuple[str, str]], levels: list[list[str]]) -> None:
        for lvl in levels:
            p, q = lvl[0], lvl[1]
            if Decimal(q) == 0:
                side.pop(Decimal(p), None)
            else:
                side[Decimal(p)] = (p, q)

    def truncate(self) -> None:
        while len(self.bids) > self.depth:
            del self.bids[min(self.bids)]
        while len(self.asks) > self.depth:
            del self.asks[max(self.asks)]

    def sorted(self, side: int) -> list[tuple[str, str]]:
        d = self.bids if side == BID else self.asks
        return [d[p] for p in sorted(d, reverse=side == BID)]

    def crc(self) -> int:
        def text(levels: list[tuple[str, str]]) -> str:
            return "".join(p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0") for p, q in levels)
        return zlib.crc32((text(self.sorted(ASK)[:10]) + text(self.sorted(BID)[:10])).encode())


def v1_reference(frames: list[str], depth: int) -> tuple[dict[str, RefBook], int]:
    """Replay v1 frames by hand; assert the reference's own CRC equals every ``c``; return the
    books and how many checksums it verified."""
    books: dict[str, RefBook] = {}
    n = 0
    for text in frames:
        m = json.loads(text)
        if not isinstance(m, list) or not m[-2].startswith("book"):
            continue
        pair = m[-1]
        if "as" in m[1] or "bs" in m[1]:
            books[pair] = rb = RefBook(depth)
            rb.apply(rb.asks, m[1].get("as", []))
            rb.apply(rb.bids, m[1].get("bs", []))
        else:
            rb = books[pair]
            for d in m[1:-2]:
                rb.apply(rb.asks, d.get("a", []))
                rb.apply(rb.bids, d.get("b", []))
        rb.truncate()
        for d in m[1:-2]:
            if "c" in d:
                assert rb.crc() == int(d["c"]), (pair, text[:120])
                n += 1
    return books, n


def assert_same_book(book: Book, ref: RefBook, key: str) -> None:
    """Level by level, and each level keeps the wire's exact digits (format(d, "f") == wire text)."""
    for side in (BID, ASK):
        got = [(format(p, "f"), format(q, "f")) for p, q in book.levels(side)]
        assert got == ref.sorted(side), (key, side)
    book.check()


# --- checksum: the official vectors -------------------------------------------------------------


def vectors() -> list[dict[str, Any]]:
    return json.loads(VECTORS.read_text())["vectors"]


def test_every_official_vector_verifies() -> None:
    """Each vector's asks/bids strings and CRC32 come out exactly, from Decimals of the wire text
    (with and without the vector's instrument precision), and the raw GST/USD v2 frame verifies
    through the real v2 parser."""
    n = 0
    for v in vectors():
        asks = [(lvl[0], lvl[1]) for lvl in v["asks_low_to_high"]]
        bids = [(lvl[0], lvl[1]) for lvl in v["bids_high_to_low"]]
        book = book_of(asks, bids)
        prec = (v["price_precision"], v["qty_precision"]) if "price_precision" in v else None
        for p in {prec, None}:
            assert ck.checksum_text(book, p) == v["expected_asks_string"] + v["expected_bids_string"], v["id"]
            assert ck.checksum(book, p) == v["expected_checksum"], v["id"]
            assert ck.mismatch(book, v["expected_checksum"], p) is None
        if "raw_frame" in v:
            snap = parse_v2.parse_frame(v["raw_frame"])
            assert isinstance(snap, Snapshot) and snap.checksum == v["expected_checksum"]
            b = Book()
            b.load(snap.bids, snap.asks)
            assert ck.checksum(b) == v["expected_checksum"]
            assert ck.checksum(b, prec) == v["expected_checksum"]
        n += 1
    print(f"\nKraken official checksum vectors verified: {n}")
    assert n == 3


def test_checksum_digits_of_small_and_padded_values() -> None:
    """Digits come from the wire exponent (or the instrument precision), never from str() or
    normalize(): 0.00000500 -> 500, 0.05000 -> 5000, 5.0E-7 -> 50, re-serialised 4.0 at 8 -> 400000000."""
    assert ck.digits(Decimal("45285.2")) == "452852"
    assert ck.digits(Decimal("0.00100000")) == "100000"
    assert ck.digits(Decimal("0.05000")) == "5000"
    assert ck.digits(Decimal("0.00000500")) == "500"
    d = Decimal("0.00000050")
    assert str(d) == "5.0E-7" and ck.digits(d) == "50"        # str() would give "5.0E-7"
    assert ck.digits(d.normalize()) == "5"                    # what normalize() would break
    assert ck.digits(Decimal("4.0"), 8) == "400000000"
    assert ck.digits(Decimal("5E-7"), 8) == "50"
    assert ck.digits(Decimal("13600.00000000")) == "1360000000000"
    assert ck.digits(Decimal("29430.25"), 1) == "2943025"     # more decimals than the precision: never rounded
    assert ck.digits(Decimal("29431.0"), 1) == "294310"
    assert ck.digits(Decimal("100"), 0) == "100"


def test_small_price_book_from_a_v2_frame_keeps_the_wire_digits() -> None:
    """A v2 snapshot of a sub-cent pair parsed from JSON numbers: prices 0.00000500 keep their
    eight decimals, and the checksum equals the CRC of the wire text by hand."""
    frame = ('{"channel":"book","type":"snapshot","data":[{"symbol":"SHIB/USD",'
             '"bids":[{"price":0.00000500,"qty":1000000.00000000},{"price":0.00000490,"qty":25.50000000}],'
             '"asks":[{"price":0.00000510,"qty":0.00010000}],"checksum":0}]}')
    snap = parse_v2.parse_frame(frame)
    assert isinstance(snap, Snapshot)
    assert [format(p, "f") for p, _ in snap.bids] == ["0.00000500", "0.00000490"]
    b = Book()
    b.load(snap.bids, snap.asks)
    text = "510" + "10000" + "500" + "100000000000000" + "490" + "2550000000"
    assert ck.checksum_text(b) == text
    assert ck.checksum(b) == zlib.crc32(text.encode()) == ck.checksum(b, (8, 8))


def test_checksum_of_short_and_empty_sides() -> None:
    """A side with fewer than 10 levels contributes what it has; an empty book is crc32(b"")."""
    assert ck.checksum(Book()) == zlib.crc32(b"") == 0
    b = book_of([("1.5", "2.0")], [])
    assert ck.checksum_text(b) == "1520"
    b = book_of([], [("0.9", "0.10")])
    assert ck.checksum(b) == zlib.crc32(b"910")


def test_checksum_covers_only_the_top_ten() -> None:
    """Levels beyond the 10th of a side do not change the checksum; the 10th does."""
    asks = [(f"{100 + i}.0", "1.0") for i in range(15)]
    bids = [(f"{99 - i}.0", "1.0") for i in range(15)]
    base = ck.checksum(book_of(asks, bids))
    assert ck.checksum(book_of(asks[:10], bids[:10])) == base
    assert ck.checksum(book_of(asks[:9] + asks[10:], bids)) != base


def test_checksum_memo_follows_the_levels_objects_not_their_values() -> None:
    """A level re-set to an equal quantity written with another exponent (1.25 -> 1.250), or
    removed and re-added at an equal price written otherwise (2.5 -> 2.50), changes the
    checksum exactly as the wire text does: the memo of level texts never serves an equal value."""
    b = book_of([("2.5", "1.25")], [("2.4", "3")])
    assert ck.checksum(b) == zlib.crc32(b"25125" b"243")
    b.apply(ASK, Decimal("2.5"), Decimal("1.250"))
    assert ck.checksum(b) == zlib.crc32(b"251250" b"243")
    b.apply(ASK, Decimal("2.5"), Decimal(0))
    b.apply(ASK, Decimal("2.50"), Decimal("1.25"))
    assert ck.checksum(b) == zlib.crc32(b"250125" b"243")
    assert ck.checksum(b, (1, 3)) == zlib.crc32(b"251250" b"243000")


def test_memoised_checksum_equals_the_crc_of_the_text_over_random_books(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 3000 random level changes (values written with 1 to 8 decimals, equal values written
    differently, removals; both no precision and (3, 8); a memo small enough to be cleared many
    times), checksum() always equals the CRC32 of checksum_text() (the text built afresh)."""
    import random

    monkeypatch.setattr(ck, "MEMO_MAX", 50)
    rng = random.Random(7)
    b = Book()

    for i in range(3000):
        side = ASK if rng.random() < 0.5 else BID
        ticks = 100_000 + rng.randint(1, 40) * (1 if side == ASK else -1)
        price = Decimal(ticks).scaleb(-3).quantize(Decimal(1).scaleb(-rng.randint(3, 6)))
        qty = Decimal(rng.randint(0, 3) * 25).scaleb(-2).quantize(Decimal(1).scaleb(-rng.randint(2, 8)))
        b.apply(side, price, qty)
        for prec in (None, (3, 8)):
            assert ck.checksum(b, prec) == zlib.crc32(ck.checksum_text(b, prec).encode()), (i, prec)


def test_a_mismatch_names_both_checksums() -> None:
    """mismatch() says venue and computed values and the top of the book."""
    v = vectors()[0]
    book = book_of([(x[0], x[1]) for x in v["asks_low_to_high"]], [(x[0], x[1]) for x in v["bids_high_to_low"]])
    msg = ck.mismatch(book, 123456789)
    assert msg == ("checksum mismatch: venue 123456789, computed 974947235 (best bid 0.05000 x 0.00000500, "
                   "best ask 0.05005 x 0.00000500, 10/10 levels)")


# --- replays of the real recordings ---------------------------------------------------------------


def test_ws50_every_checksum_verifies_through_the_v1_parser_and_book() -> None:
    """KRAKEN.ws.50.0 (raw v1 wire, book-1000, 10 pairs): all 4269 update checksums verify after
    each message is applied and the book truncated to 1000; the books equal the independent
    reference level by level, wire digits included."""
    frames = ws50_frames()
    r = Replay(parse_v1.parse_frame, 1000)
    for text in frames:
        r.feed(text)
    ref, ref_n = v1_reference(frames, 1000)
    per_pair = {k: s.verified for k, s in sorted(r.syms.items())}
    print(f"\nKRAKEN.ws.50.0: {r.verified} checksums verified of 4269 (reference: {ref_n}); per pair {per_pair}")
    assert r.mismatches == []
    assert r.verified == ref_n == 4269
    assert len(r.syms) == 10 and all(s.snapshots == 1 and s.dropped == 0 for s in r.syms.values())
    assert sum(s.updates for s in r.syms.values()) == 4269
    kinds = [c.kind for c in r.controls]
    assert kinds.count(ControlKind.ACK) == 10 and kinds.count(ControlKind.HEARTBEAT) == 31
    assert [c.detail for c in r.controls if c.kind is ControlKind.MODE] == ["online"]
    for key, st in r.syms.items():
        assert_same_book(st.book, ref[key], key)
        assert ck.checksum(st.book) == ref[key].crc()
        assert not st.book.crossed()


def test_sdk_v1_every_checksum_verifies_republish_levels_included() -> None:
    """The SDK v1 file (XBT/USD, book-10): all 979 checksums verify, its 223 "r" republish
    levels applied like any other, the book truncated to 10 after each message."""
    frames = sdk_v1_frames()
    republished = sum(1 for t in frames for d in (json.loads(t)[1:-2] if t.startswith("[") else [])
                      for side in ("a", "b") for lvl in d.get(side, []) if len(lvl) == 4 and lvl[3] == "r")
    r = Replay(parse_v1.parse_frame, 10)
    for text in frames:
        r.feed(text)
    ref, ref_n = v1_reference(frames, 10)
    print(f"\nSDK v1 file: {r.verified} checksums verified of 979 ({republished} republish levels)")
    assert r.mismatches == []
    assert r.verified == ref_n == 979
    assert republished == 223
    assert list(r.syms) == ["XBT/USD"]
    assert_same_book(r.syms["XBT/USD"].book, ref["XBT/USD"], "XBT/USD")
    assert len(r.syms["XBT/USD"].book.bids) == len(r.syms["XBT/USD"].book.asks) == 10


def test_sdk_v1_without_truncation_fails() -> None:
    """Why the core must truncate: without it most checksums of the book-10 file fail (64 of 979 pass)."""
    book = Book()
    ok = 0
    for text in sdk_v1_frames():
        for f in items(parse_v1.parse_frame(text)):
            if isinstance(f, Snapshot):
                book.load(f.bids, f.asks)
            elif isinstance(f, DepthEvent):
                book.apply_levels(f.bids, f.asks)
                ok += ck.checksum(book) == f.checksum
    assert ok == 64


def test_sdk_v2_every_checksum_verifies_with_the_instrument_precision() -> None:
    """The SDK v2 file (BTC/USD, depth 10, re-serialised numbers): the snapshot and all 509
    updates verify through the real v2 parser when the precision comes as an INSTRUMENT control
    (price 1, qty 8 decimals) would give it; without it none does (the trailing zeros are lost)."""
    inst = items(parse_v2.parse_frame(BTC_USD_INSTRUMENT))
    assert inst == [Control(ControlKind.INSTRUMENT, "online", "BTC/USD", (1, 8))]
    r = Replay(parse_v2.parse_frame, 10)
    r.feed(BTC_USD_INSTRUMENT)
    for text in sdk_v2_frames():
        r.feed(text)
    st = r.syms["BTC/USD"]
    print(f"\nSDK v2 file: {r.verified} checksums verified of 510 (snapshot + {st.updates} updates)")
    assert r.mismatches == []
    assert r.verified == 510 and st.snapshots == 1 and st.updates == 509

    bare = Replay(parse_v2.parse_frame, 10)
    for text in sdk_v2_frames()[:5]:
        bare.feed(text)
    assert bare.verified == 0 and len(bare.mismatches) == 1  # the snapshot fails; later updates are dropped
    assert bare.syms["BTC/USD"].dropped == 4


def test_a_wrong_checksum_is_detected_and_resyncs_that_symbol_only() -> None:
    """One update of XMR/USD with a wrong "c": that symbol mismatches (both values named), is
    void until a snapshot, and the nine other pairs verify every one of their checksums."""
    frames = ws50_frames()
    i = next(i for i, t in enumerate(frames) if t.startswith("[992,") and '"c":"2583817756"' in t)
    frames[i] = frames[i].replace('"c":"2583817756"', '"c":"2583817757"')
    r = Replay(parse_v1.parse_frame, 1000)
    for text in frames:
        r.feed(text)
    xmr = r.syms["XMR/USD"]
    assert len(xmr.mismatches) == 1
    assert xmr.mismatches[0].startswith("checksum mismatch: venue 2583817757, computed 2583817756 (")
    assert xmr.verified == 0 and len(xmr.book) == 0 and xmr.seqr.position is None
    others = {k: s for k, s in r.syms.items() if k != "XMR/USD"}
    _, ref_n = v1_reference(ws50_frames(), 1000)
    xmr_updates = sum(1 for t in ws50_frames() if t.startswith("[992,") and '"c"' in t)
    assert sum(s.verified for s in others.values()) == ref_n - xmr_updates
    assert all(s.mismatches == [] for s in others.values())
    assert xmr.dropped == xmr_updates - 1


def test_a_wrong_level_is_detected_by_the_next_checksum() -> None:
    """A quantity altered on the wire (checksum left alone) is a mismatch at that very message."""
    frames = sdk_v1_frames()
    i = next(i for i, t in enumerate(frames) if '"13.54109952"' in t)
    frames[i] = frames[i].replace('"13.54109952"', '"13.54109953"')
    r = Replay(parse_v1.parse_frame, 10)
    for text in frames:
        r.feed(text)
    assert r.verified == 0 and len(r.mismatches) == 1
    assert r.mismatches[0].startswith("checksum mismatch: venue 3572756970, computed ")


def test_a_new_snapshot_after_a_mismatch_verifies_again() -> None:
    """After a mismatch the symbol takes the next snapshot (a resubscribe's answer): it REPLACES
    the book and every later checksum verifies."""
    frames = sdk_v1_frames()
    snapshot = frames[3]
    assert snapshot.startswith("[336, {\"as\"")
    i = next(i for i, t in enumerate(frames) if '"13.54109952"' in t)
    frames[i] = frames[i].replace('"c": "3572756970"', '"c": "1"')
    r = Replay(parse_v1.parse_frame, 10)
    for text in frames[: i + 1]:
        r.feed(text)
    assert len(r.mismatches) == 1
    # a fresh snapshot equal to the book right before frame i+1 (built by the reference)
    ref, _ = v1_reference(sdk_v1_frames()[: i + 1], 10)
    rb = ref["XBT/USD"]
    snap = json.dumps([336, {"as": [[p, q, "1693415330.0"] for p, q in rb.sorted(ASK)],
                             "bs": [[p, q, "1693415330.0"] for p, q in rb.sorted(BID)]}, "book-10", "XBT/USD"])
    r.feed(snap)
    for text in frames[i + 1:]:
        r.feed(text)
    assert len(r.mismatches) == 1 and r.verified == 979 - 1


# --- parsers: the other frames ------------------------------------------------------------------


def test_v2_control_frames() -> None:
    """status -> MODE, heartbeat/pong -> HEARTBEAT, acks -> ACK (with the book's symbol), a refused
    pair -> SYMBOL_ERROR, a rate limit -> ERROR, other channels -> IGNORE."""
    p = parse_v2.parse_frame
    assert p('{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
             '"api_version":"v2","connection_id":15483510049470446170}]}') == Control(ControlKind.MODE, "online",
                                                                                     value="v2")
    for mode in ("maintenance", "cancel_only", "post_only"):
        f = p(f'{{"channel":"status","type":"update","data":[{{"system":"{mode}"}}]}}')
        assert f == Control(ControlKind.MODE, mode)
    assert p('{"channel":"heartbeat"}') == Control(ControlKind.HEARTBEAT, "heartbeat")
    assert p('{"method":"pong","req_id":4,"time_in":"x","time_out":"y"}') == Control(ControlKind.HEARTBEAT, "pong")
    assert p('{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"BTC/USD"},'
             '"success":true,"time_in":"2023-10-04T07:48:25Z","time_out":"2023-10-04T07:48:25Z","req_id":1}'
             ) == Control(ControlKind.ACK, "subscribe book", "BTC/USD")
    assert p('{"method":"unsubscribe","result":{"channel":"book","depth":10,"symbol":"BTC/USD"},"success":true}'
             ) == Control(ControlKind.ACK, "unsubscribe book", "BTC/USD")
    assert p('{"method":"subscribe","result":{"channel":"instrument","snapshot":true},"success":true,"req_id":2}'
             ) == Control(ControlKind.ACK, "subscribe instrument")
    assert p('{"method":"subscribe","success":false,"error":"Currency pair not supported BTC/XYZ",'
             '"symbol":"BTC/XYZ","req_id":1}') == Control(ControlKind.SYMBOL_ERROR,
                                                          "Currency pair not supported BTC/XYZ", "BTC/XYZ")
    assert p('{"method":"subscribe","success":false,"error":"Exceeded msg rate","symbol":"BTC/USD"}'
             ) == Control(ControlKind.ERROR, "subscribe refused: Exceeded msg rate", "BTC/USD")
    assert kind(p('{"method":"subscribe","success":false,"error":"Already subscribed","symbol":"BTC/USD"}'
                  )) is ControlKind.ERROR
    assert p('{"method":"unsubscribe","success":false,"error":"Subscription Not Found","symbol":"BTC/USD"}'
             ) == Control(ControlKind.ERROR, "unsubscribe refused: Subscription Not Found", "BTC/USD")
    assert p('{"channel":"ticker","type":"update","data":[]}') == Control(ControlKind.IGNORE, "ticker")
    assert p('{"error":"bad request","success":false}') == Control(ControlKind.ERROR, "bad request")


def test_v2_update_fields() -> None:
    """A v2 update: exact Decimals, checksum, RFC 3339 time in ns, no ids; several items -> a list."""
    ev = parse_v2.parse_frame(sdk_v2_frames()[1])
    assert ev == DepthEvent("BTC/USD", 0, 0, 1690730998343415000, [],
                            [(Decimal("29431.1"), Decimal("0.0")), (Decimal("29433.3"), Decimal("0.8")),
                             (Decimal("29430.6"), Decimal("0.001"))], 3547452596)
    two = parse_v2.parse_frame('{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[],"asks":[],'
                               '"checksum":1},{"symbol":"C/D","bids":[{"price":1.50,"qty":2}],"asks":[],'
                               '"checksum":2,"timestamp":"1970-01-01T00:00:01.000000001Z"}]}')
    assert two == [DepthEvent("A/B", 0, 0, 0, [], [], 1),
                   DepthEvent("C/D", 0, 0, 1_000_000_001, [(Decimal("1.50"), Decimal(2))], [], 2)]
    assert isinstance(two, list) and isinstance(two[1], DepthEvent)
    assert format(two[1].bids[0][0], "f") == "1.50"


def test_v2_instrument_frame_gives_one_precision_per_pair() -> None:
    """Pairs with both precisions become INSTRUMENT controls; pairs without them are skipped."""
    f = parse_v2.parse_frame('{"channel":"instrument","type":"update","data":{"pairs":['
                             '{"symbol":"BTC/USD","price_precision":1,"qty_precision":8,"status":"online"},'
                             '{"symbol":"GST/USD","price_precision":3,"qty_precision":8,"status":"post_only"},'
                             '{"symbol":"X/Y","price_precision":"1","qty_precision":8},{"symbol":"Q/R"}]}}')
    assert f == [Control(ControlKind.INSTRUMENT, "online", "BTC/USD", (1, 8)),
                 Control(ControlKind.INSTRUMENT, "post_only", "GST/USD", (3, 8))]
    assert kind(parse_v2.parse_frame('{"channel":"instrument","type":"update","data":{"assets":[]}}')
                ) is ControlKind.IGNORE


def test_v1_control_frames() -> None:
    """systemStatus -> MODE, subscriptionStatus -> ACK / SYMBOL_ERROR / ERROR, heartbeat and pong
    -> HEARTBEAT, other channels' arrays -> IGNORE."""
    p = parse_v1.parse_frame
    assert p('{"connectionID":17843232920108168701,"event":"systemStatus","status":"online","version":"1.8.3"}'
             ) == Control(ControlKind.MODE, "online", value="1.8.3")
    assert p('{"event":"systemStatus","status":"maintenance"}') == Control(ControlKind.MODE, "maintenance")
    assert p('{"channelID":992,"channelName":"book-1000","event":"subscriptionStatus","pair":"XMR/USD",'
             '"status":"subscribed","subscription":{"depth":1000,"name":"book"}}'
             ) == Control(ControlKind.ACK, "subscribed book-1000", "XMR/USD")
    assert p('{"errorMessage":"Currency pair not supported XBT/XYZ","event":"subscriptionStatus","pair":"XBT/XYZ",'
             '"status":"error","subscription":{"depth":10,"name":"book"}}'
             ) == Control(ControlKind.SYMBOL_ERROR, "Currency pair not supported XBT/XYZ", "XBT/XYZ")
    assert kind(p('{"errorMessage":"Subscription Not Found","event":"subscriptionStatus","pair":"XBT/USD",'
                  '"status":"error","subscription":{"depth":10,"name":"book"}}')) is ControlKind.ERROR
    # the echoed reqid tells a refused unsubscribe (harmless) from a refused subscribe
    assert p('{"errorMessage":"Whatever","event":"subscriptionStatus","pair":"XBT/USD","reqid":3,'
             '"status":"error","subscription":{"depth":10,"name":"book"}}') == Control(
        ControlKind.ERROR, "unsubscribe refused: Whatever", "XBT/USD")
    assert p('{"errorMessage":"Whatever","event":"subscriptionStatus","pair":"XBT/USD","reqid":1,'
             '"status":"error","subscription":{"depth":10,"name":"book"}}') == Control(
        ControlKind.SYMBOL_ERROR, "Whatever", "XBT/USD")
    assert p('{"event":"heartbeat"}') == Control(ControlKind.HEARTBEAT, "heartbeat")
    assert p('{"event":"pong","reqid":1}') == Control(ControlKind.HEARTBEAT, "pong")
    assert p('{"event":"error","errorMessage":"Malformed request"}') == Control(ControlKind.ERROR,
                                                                                 "Malformed request")
    assert p('[321,[["5541.2","1.0","1534614057.321597","s","l",""]],"trade","XBT/USD"]') == Control(
        ControlKind.IGNORE, "trade")


def test_v1_two_payload_update_keeps_both_sides_in_array_order() -> None:
    """The real two-dict SC/EUR update: the ask and the bid both parsed, with checksum and time."""
    text = ('[1920,{"a":[["0.042990","364630.28272081","1618678145.920470"]]},'
            '{"b":[["0.042990","0.00000000","1618678145.920708"]],"c":"4105471083"},"book-1000","SC/EUR"]')
    assert text in ws50_frames()
    assert parse_v1.parse_frame(text) == DepthEvent(
        "SC/EUR", 0, 0, 1618678145920708000, [(Decimal("0.042990"), Decimal("0"))],
        [(Decimal("0.042990"), Decimal("364630.28272081"))], 4105471083)


V2_BAD = [
    # (frame, the ParseError's key)
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":"NaN","qty":1}],'
     '"asks":[],"checksum":1}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":-1.5,"qty":1}],'
     '"asks":[],"checksum":1}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":0.0,"qty":1}],'
     '"asks":[],"checksum":1}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1.5}],'
     '"asks":[],"checksum":1}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[[1.5,1]],"asks":[]}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":{},"asks":[]}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[{"price":1e-30,"qty":1}]}]}',
     "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[{"price":1e30,"qty":1}]}]}',
     "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],"checksum":4294967296}]}',
     "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],"checksum":1.5}]}',
     "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],"checksum":true}]}',
     "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],"timestamp":"yesterday"}]}',
     "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[],'
     '"timestamp":"2023-13-30T15:29:58Z"}]}', "BTC/USD"),
    ('{"channel":"book","type":"delta","data":[{"symbol":"BTC/USD","bids":[],"asks":[]}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":[],"asks":[]},'
     '{"symbol":"BTC/USD","bids":[{"price":1,"qty":-2}],"asks":[]}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"bids":[],"asks":[]}]}', None),
    ('{"channel":"book","type":"update","data":[]}', None),
    ('{"channel":"book","type":"update","data":{}}', None),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":NaN,"qty":1}],"asks":[]}]}',
     None),
    ('{"channel":"status","type":"update","data":[{}]}', None),
    ('{"channel":"instrument","type":"snapshot","data":[]}', None),
    ('{"channel":"book"', None),
    ('[1,2,3]', None),
    ('{"foo":1}', None),
    ('"text"', None),
    ("", None),
    (b"\xff\xfe{", None),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":' + "9" * 5000 + ',"qty":1}]}]}',
     None),
    ("[" * 100_000, None),
    # found by fuzzing: an exponent beyond Decimal's range raised InvalidOperation
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":7.5e-4099999999995182177,'
     '"qty":1}],"asks":[]}]}', None),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1.5e999999999999999999,'
     '"qty":1}],"asks":[]}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":0.0000000000000000001,'
     '"qty":1}],"asks":[]}]}', "BTC/USD"),
    ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1.5,'
     '"qty":1.5E-19}],"asks":[]}]}', "BTC/USD"),
]

V1_BAD = [
    ('[992,{"b":[["NaN","5.00000000","1618678133.365913"]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.15000000","-5.0","1618678133.365913"]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[[354.15,"5.0","1618678133.365913"]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.15","5.0"]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.15","5.0","1618678133.365913",5]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.15","5.0","soon"]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["0.0","5.0","1618678133.365913"]],"c":"1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.15","5.0","1618678133.365913"]],"c":"x1"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.15","5.0","1618678133.365913"]],"c":"99999999999"},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":{}},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"x":[]},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,"b","book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"as":[]},{"bs":[]},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"a":[]},{"b":[]},{"b":[]},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"as":[["1.0","1.0","1e999"]],"bs":[]},"book-1000","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[]},"book-1000",5]', None),
    ('[992,{"b":[]},"XMR/USD"]', None),
    ('{"event":"systemStatus"}', None),
    ('{"event":"subscriptionStatus","status":"maybe"}', None),
    ('{"channel":"book"}', None),
    ("42", None),
    ("not json", None),
]


def test_v2_long_and_exponent_tokens_and_odd_text_parse_as_before() -> None:
    """Number tokens past 20 characters or with an exponent take the checked path and come out as
    plain Decimals with the wire's exponent (trailing zeros are not decimals); a frame with a lone
    surrogate escape (which the fast JSON decoder refuses) still parses, as with the standard one."""
    ev = parse_v2.parse_frame('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":'
                              '[{"price":1.50000000000000000000,"qty":25E-1}],"asks":[{"price":2.5,"qty":1}]}]}')
    assert isinstance(ev, DepthEvent)
    assert [(type(p), format(p, "f"), type(q), format(q, "f")) for p, q in ev.bids] == [
        (Decimal, "1.50000000000000000000", Decimal, "2.5")]
    assert ev.asks == [(Decimal("2.5"), 1)] and type(ev.asks[0][1]) is Decimal
    hb = parse_v2.parse_frame('{"channel":"heartbeat","note":"\\ud800"}')
    assert hb == Control(ControlKind.HEARTBEAT, "heartbeat")


@pytest.mark.parametrize(("text", "key"), V2_BAD)
def test_v2_malformed_frames_are_parse_errors_naming_the_symbol(text: str | bytes, key: str | None) -> None:
    """Every malformed v2 frame is a ParseError (never another exception), naming the book's symbol."""
    with pytest.raises(ParseError) as e:
        parse_v2.parse_frame(text)
    assert e.value.key == key


@pytest.mark.parametrize(("text", "key"), V1_BAD)
def test_v1_malformed_frames_are_parse_errors_naming_the_pair(text: str, key: str | None) -> None:
    """Every malformed v1 frame is a ParseError (never another exception), naming the book's pair."""
    with pytest.raises(ParseError) as e:
        parse_v1.parse_frame(text)
    assert e.value.key == key


def test_v2_numbers_never_become_floats() -> None:
    """Every price and quantity of the recorded v2 frames is a Decimal (never a float)."""
    for text in sdk_v2_frames():
        for f in items(parse_v2.parse_frame(text)):
            assert isinstance(f, Snapshot | DepthEvent)
            assert all(type(p) is Decimal and type(q) is Decimal for p, q in f.bids + f.asks)


# --- specs, names, pair list, registry ------------------------------------------------------------


def test_specs_are_in_the_registry_with_the_kraken_rule() -> None:
    """Both APIs load from common/venues.py; each is STREAM + RESUBSCRIBE + truncate + checksum."""
    assert venues.load_spec("kraken") is spec_v2.SPEC
    assert venues.load_spec("kraken", "v2") is spec_v2.SPEC
    assert venues.load_spec("kraken", "v1") is spec_v1.SPEC
    for s in (spec_v1.SPEC, spec_v2.SPEC):
        assert s.kind == "kraken" and s.snapshot == STREAM and s.resync == RESUBSCRIBE and s.truncate
        assert s.checksum is ck.checksum and s.depth_limit(vcfg(25)) == 25
        assert isinstance(s.sequencer(), StreamSequencer) and not s.conn_seq
        assert s.pairs_url(vcfg()) == "https://api.kraken.com/0/public/AssetPairs"


def test_v2_subscribe_and_resubscribe_frames() -> None:
    """Instrument then book with depth and snapshot on connect; unsubscribe + subscribe of one symbol."""
    cfg = vcfg(1000)
    assert spec_v2.SPEC.ws_url(cfg, ["BTC/USD"]) == "wss://ws.kraken.com/v2"
    assert [json.loads(f) for f in spec_v2.SPEC.subscribe(cfg, ["BTC/USD", "DOGE/USD"])] == [
        {"method": "subscribe", "params": {"channel": "instrument", "snapshot": True}, "req_id": 2},
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD", "DOGE/USD"], "depth": 1000,
                                           "snapshot": True}, "req_id": 1},
    ]
    assert spec_v2.SPEC.resubscribe is not None
    assert [json.loads(f) for f in spec_v2.SPEC.resubscribe(cfg, "DOGE/USD")] == [
        {"method": "unsubscribe", "params": {"channel": "book", "symbol": ["DOGE/USD"], "depth": 1000}, "req_id": 3},
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["DOGE/USD"], "depth": 1000,
                                           "snapshot": True}, "req_id": 1},
    ]
    assert json.loads(spec_v2.SPEC.heartbeat_frame or "") == {"method": "ping", "req_id": 4}


def test_v1_subscribe_and_resubscribe_frames() -> None:
    """The recorded v1 subscribe shape; unsubscribe + subscribe of one pair."""
    cfg = vcfg(10, url="wss://ws.kraken.com")
    assert [json.loads(f) for f in spec_v1.SPEC.subscribe(cfg, ["XBT/USD"])] == [
        {"event": "subscribe", "reqid": 1, "pair": ["XBT/USD"], "subscription": {"name": "book", "depth": 10}}]
    assert spec_v1.SPEC.resubscribe is not None
    assert [json.loads(f) for f in spec_v1.SPEC.resubscribe(cfg, "XDG/USD")] == [
        {"event": "unsubscribe", "reqid": 3, "pair": ["XDG/USD"], "subscription": {"name": "book", "depth": 10}},
        {"event": "subscribe", "reqid": 1, "pair": ["XDG/USD"], "subscription": {"name": "book", "depth": 10}}]
    assert json.loads(spec_v1.SPEC.heartbeat_frame or "") == {"event": "ping", "reqid": 4}
    # the recorded client sent exactly this shape
    sent = next(ln for ln in (recorded("kraken") / WS50).read_text().split("\n") if " <- " in ln)
    assert json.loads(sent.split(": ", 1)[1])["subscription"] == {"name": "book", "depth": 1000}


@pytest.mark.parametrize("depth", [0, 1, 5, 50, 200, 1001, 5000])
def test_a_depth_kraken_refuses_is_an_error_naming_the_key(depth: int) -> None:
    """check_config (validate) refuses every depth but 10/25/100/500/1000, naming venues.<id>.depth."""
    for spec in (spec_v1.SPEC, spec_v2.SPEC):
        assert spec.check_config is not None
        with pytest.raises(ConfigError) as e:
            spec.check_config(vcfg(depth, venue_id="kraken_eu"))
        assert isinstance(e.value, ValueError)
        assert str(e.value) == (f"venues.kraken_eu.depth is {depth}; Kraken's book depth must be one of "
                                "10, 25, 100, 500, 1000")
    with pytest.raises(ConfigError) as e:
        spec_v2.validate(vcfg(depth, venue_id="kraken_eu"))
    assert str(e.value) == (f"venues.kraken_eu.depth is {depth}; Kraken's book depth must be one of "
                            "10, 25, 100, 500, 1000")


def test_accepted_depths() -> None:
    """The five documented depths pass."""
    for d in (10, 25, 100, 500, 1000):
        spec_v1.validate(vcfg(d))
        spec_v2.validate(vcfg(d))


def test_symbol_names() -> None:
    """Canonical BTC/USD is BTC/USD on v2 and XBT/USD on v1; DOGE is XDG on v1; back again."""
    assert spec_v2.SPEC.key_of("BTC/USD") == "BTC/USD"
    assert spec_v1.SPEC.key_of("BTC/USD") == "XBT/USD"
    assert spec_v1.SPEC.key_of("DOGE/USD") == "XDG/USD"
    assert spec_v1.SPEC.key_of("ETH/BTC") == "ETH/XBT"
    assert spec_v1.SPEC.key_of("ETH/USDT") == "ETH/USDT"
    assert pairs.canonical("XBT/USD") == "BTC/USD" and pairs.canonical("XDG/XBT") == "DOGE/BTC"


def asset_pairs_body() -> str:
    return read_http(recorded("kraken") / "KRAKEN.0")[0].body


def test_asset_pairs_map_by_wsname() -> None:
    """The recorded AssetPairs: 293 pairs with a wsname; each recorded v1 pair is listed under its
    canonical name, keyed XBT/... for v1 and BTC/... for v2."""
    p1 = spec_v1.SPEC.parse_pairs(asset_pairs_body())
    p2 = spec_v2.SPEC.parse_pairs(asset_pairs_body())
    assert len(p1) == len(p2) == 293
    recorded_pairs = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT", "OMG/USD",
                      "XBT/CHF", "ADA/XBT"]
    for ws in recorded_pairs:
        sym = ws.replace("XBT", "BTC")
        assert p1[sym].key == ws and p1[sym].trading
        assert p2[sym].key == sym
    assert p1["BTC/USD"] == pairs.PairInfo("BTC/USD", "XBT/USD", True, "online")
    assert p2["DOGE/USD"].key == "DOGE/USD" and p1["DOGE/USD"].key == "XDG/USD"


def test_asset_pairs_status_and_errors() -> None:
    """A status outside online/cancel_only/post_only/limit_only/reduce_only is not trading; an
    error body is a ParseError naming the error."""
    body = json.dumps({"error": [], "result": {
        "XXBTZUSD": {"wsname": "XBT/USD", "status": "post_only"},
        "GONEUSD": {"wsname": "GONE/USD", "status": "delisted"},
        "XXBTZUSD.d": {"altname": "XBTUSD.d"},
        "BAD": {"wsname": "NOSLASH"}}})
    got = spec_v2.SPEC.parse_pairs(body)
    assert got == {"BTC/USD": pairs.PairInfo("BTC/USD", "BTC/USD", True, "post_only"),
                   "GONE/USD": pairs.PairInfo("GONE/USD", "GONE/USD", False, "delisted")}
    with pytest.raises(ParseError, match="EQuery:Unknown asset pair"):
        spec_v2.SPEC.parse_pairs('{"error":["EQuery:Unknown asset pair"]}')


def test_recordings_are_where_the_tests_expect_them() -> None:
    """The fixtures resolve from this file's path (a missing shared/ is a failure, not a skip)."""
    assert Path(VECTORS).is_file()
    for name in (WS50, SDK_V1, SDK_V2, "KRAKEN.0"):
        assert (recorded("kraken") / name).is_file()


# --- the same recordings through the real FeedCore (in-process, no sockets) ------------------------

WS50_SYMBOLS = ("WAVES/EUR", "XMR/USD", "KSM/BTC", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/BTC", "OMG/USD",
                "BTC/CHF", "ADA/BTC")


class Subscriber:
    """The bus as a subscriber sees it: a snap replaces the symbol's book, a delta applies (0
    deletes), any status takes the book away; ``live`` is the set of symbols with a book."""

    def __init__(self) -> None:
        self.books: dict[str, dict[int, dict[Decimal, Decimal]]] = {}
        self.status: dict[str, str] = {}
        self.modes: list[str] = []
        self.seqs: dict[str, int] = {}

    def take(self, core: FeedCore) -> None:
        core.flush()
        for m in core.take_bus():
            if isinstance(m, HeartbeatMsg):
                self.modes.append(m.mode)
                continue
            assert m.seq == self.seqs.get(m.symbol, 0) + 1, (m.symbol, m.seq)   # each stream in order
            self.seqs[m.symbol] = m.seq
            if isinstance(m, StatusMsg):
                self.status[m.symbol] = m.status
                self.books.pop(m.symbol, None)
            elif m.kind == SNAP:
                self.status[m.symbol] = LIVE
                self.books[m.symbol] = {BID: dict(m.bids), ASK: dict(m.asks)}
            else:
                assert self.status[m.symbol] == LIVE and m.symbol in self.books
                for side, levels in ((BID, m.bids), (ASK, m.asks)):
                    for p, q in levels:
                        if q:
                            self.books[m.symbol][side][p] = q
                        else:
                            self.books[m.symbol][side].pop(p, None)

    def levels(self, symbol: str, side: int) -> list[tuple[Decimal, Decimal]]:
        d = self.books[symbol][side]
        return [(p, d[p]) for p in sorted(d, reverse=side == BID)]


def resub(spec: Any, cfg: VenueConfig, key: str) -> list[str]:
    assert spec.resubscribe is not None
    return list(spec.resubscribe(cfg, key))


def make_core(spec: Any, symbols: tuple[str, ...], depth: int, url: str) -> tuple[FeedCore, list[Action]]:
    cfg = replace(vcfg(depth, url=url), symbols=symbols)
    core = FeedCore(spec, cfg, resolve_options(spec, cfg), sess=1)
    core.start(0)
    core.connected(0.0, 0)
    return core, core.take_actions()


def drive(core: FeedCore, sub: Subscriber, frames: list[str], t0: float = 1.0) -> None:
    for i, text in enumerate(frames):
        core.frame(text, i, t0 + i * 1e-3)
        sub.take(core)


def test_ws50_through_the_feed_core_publishes_the_reference_books() -> None:
    """KRAKEN.ws.50.0 through FeedCore with the v1 spec: one subscribe frame, 10 syncs, no
    checksum failure, levels cut by depth 1000 published as deletions, and the book a subscriber
    rebuilds from the bus equals the reference, level by level, for every pair."""
    core, actions = make_core(spec_v1.SPEC, WS50_SYMBOLS, 1000, "wss://ws.kraken.com")
    assert actions == [Send(spec_v1.SPEC.subscribe(core.cfg, [pairs.v1_name(s) for s in WS50_SYMBOLS]))]
    sub = Subscriber()
    sub.take(core)
    frames = ws50_frames()
    drive(core, sub, frames)
    ref, n = v1_reference(frames, 1000)
    c = core.counters
    print(f"\nKRAKEN.ws.50.0 via FeedCore: syncs {c['syncs']}, checksum failures {c['checksum_failures']}, "
          f"levels truncated {c['truncated']}, reference checksums {n}")
    assert c["syncs"] == 10 and c["checksum_failures"] == 0 and c["malformed"] == 0 and c["resubscribes"] == 0
    assert core.take_actions() == []
    for sym in WS50_SYMBOLS:
        key = pairs.v1_name(sym)
        assert sub.status[sym] == LIVE
        for side in (BID, ASK):
            assert sub.levels(sym, side) == [(Decimal(p), Decimal(q)) for p, q in ref[key].sorted(side)], sym
            assert core.streams[sym].book.levels(side) == sub.levels(sym, side)


def test_sdk_v1_through_the_feed_core_publishes_truncations_as_deletions() -> None:
    """The SDK v1 file (book-10) through FeedCore: no checksum failure over 979, the levels cut to
    keep 10 a side go out as deletions, so the subscriber's book is the reference's 10 levels."""
    core, _ = make_core(spec_v1.SPEC, ("BTC/USD",), 10, "wss://ws.kraken.com")
    sub = Subscriber()
    frames = sdk_v1_frames()
    drive(core, sub, frames)
    ref, n = v1_reference(frames, 10)
    c = core.counters
    print(f"\nSDK v1 via FeedCore: syncs {c['syncs']}, checksum failures {c['checksum_failures']}, "
          f"levels truncated {c['truncated']}, reference checksums {n}")
    assert c["syncs"] == 1 and c["checksum_failures"] == 0 and c["truncated"] > 0 and n == 979
    for side in (BID, ASK):
        assert sub.levels("BTC/USD", side) == [(Decimal(p), Decimal(q)) for p, q in ref["XBT/USD"].sorted(side)]
        assert len(sub.levels("BTC/USD", side)) == 10


def test_sdk_v2_through_the_feed_core_with_the_instrument_precision() -> None:
    """The SDK v2 file through FeedCore with the v2 spec, after the instrument frame: one sync,
    no checksum failure over 510 checksums, 10 levels a side published."""
    core, actions = make_core(spec_v2.SPEC, ("BTC/USD",), 10, "wss://ws.kraken.com/v2")
    assert [json.loads(f)["params"]["channel"] for a in actions if isinstance(a, Send) for f in a.frames] == [
        "instrument", "book"]
    sub = Subscriber()
    drive(core, sub, [BTC_USD_INSTRUMENT, *sdk_v2_frames()])
    assert core.streams["BTC/USD"].precision == (1, 8)
    assert core.counters["syncs"] == 1 and core.counters["checksum_failures"] == 0
    assert sub.status["BTC/USD"] == LIVE
    assert len(sub.levels("BTC/USD", BID)) == len(sub.levels("BTC/USD", ASK)) == 10
    assert sub.levels("BTC/USD", BID) == core.streams["BTC/USD"].book.levels(BID)


def test_feed_core_resubscribes_only_the_symbol_whose_checksum_fails() -> None:
    """A wrong "c" on XMR/USD: the core counts one failure, publishes XMR/USD syncing, sends the
    v1 unsubscribe + subscribe of XMR/USD alone, and the nine other pairs stay live and exact."""
    core, _ = make_core(spec_v1.SPEC, WS50_SYMBOLS, 1000, "wss://ws.kraken.com")
    sub = Subscriber()
    frames = ws50_frames()
    i = next(i for i, t in enumerate(frames) if t.startswith("[992,") and '"c":"2583817756"' in t)
    frames[i] = frames[i].replace('"c":"2583817756"', '"c":"2583817757"')
    drive(core, sub, frames)
    assert core.counters["checksum_failures"] == 1 and core.counters["resubscribes"] == 1
    assert core.take_actions() == [Send(resub(spec_v1.SPEC, core.cfg, "XMR/USD"))]
    assert sub.status["XMR/USD"] == SYNCING and "XMR/USD" not in sub.books
    assert "venue 2583817757, ours 2583817756" in core.streams["XMR/USD"].reason
    ref, _ = v1_reference(ws50_frames(), 1000)
    for sym in WS50_SYMBOLS:
        if sym != "XMR/USD":
            assert sub.status[sym] == LIVE
            assert sub.levels(sym, ASK) == [(Decimal(p), Decimal(q)) for p, q in ref[pairs.v1_name(sym)].sorted(ASK)]


def test_feed_core_modes_refusals_and_malformed_updates() -> None:
    """maintenance -> every symbol down; back online -> resubscribed; cancel_only keeps books live
    with the mode on heartbeats; a refused pair -> down naming the reason; a malformed update of
    one symbol -> that symbol alone resubscribed."""
    core, _ = make_core(spec_v2.SPEC, ("BTC/USD", "DOGE/USD"), 10, "wss://ws.kraken.com/v2")
    sub = Subscriber()
    snap = ('{"channel":"book","type":"snapshot","data":[{"symbol":"%s","bids":[{"price":0.5,"qty":1.00000000}],'
            '"asks":[{"price":0.6,"qty":2.00000000}],"checksum":%d}]}')
    b = book_of([("0.6", "2.00000000")], [("0.5", "1.00000000")])
    crc = ck.checksum(b)
    drive(core, sub, ['{"channel":"status","type":"update","data":[{"system":"online"}]}',
                      snap % ("BTC/USD", crc), snap % ("DOGE/USD", crc)])
    assert sub.status == {"BTC/USD": LIVE, "DOGE/USD": LIVE}
    core.frame('{"channel":"status","type":"update","data":[{"system":"cancel_only"}]}', 10, 2.0)
    sub.take(core)
    assert sub.status == {"BTC/USD": LIVE, "DOGE/USD": LIVE} and sub.modes[-1] == "cancel_only"
    core.frame('{"channel":"status","type":"update","data":[{"system":"maintenance"}]}', 11, 2.1)
    sub.take(core)
    assert sub.status == {"BTC/USD": DOWN, "DOGE/USD": DOWN} and sub.books == {}
    core.take_actions()
    core.frame('{"channel":"status","type":"update","data":[{"system":"online"}]}', 12, 2.2)
    sub.take(core)
    assert sorted(f for a in core.take_actions() if isinstance(a, Send) for f in a.frames) == sorted(
        resub(spec_v2.SPEC, core.cfg, "BTC/USD") + resub(spec_v2.SPEC, core.cfg, "DOGE/USD"))
    drive(core, sub, [snap % ("BTC/USD", crc), snap % ("DOGE/USD", crc)], t0=3.0)
    assert sub.status == {"BTC/USD": LIVE, "DOGE/USD": LIVE}
    # a malformed update of DOGE/USD resyncs DOGE/USD only
    core.frame('{"channel":"book","type":"update","data":[{"symbol":"DOGE/USD","bids":[{"price":"x","qty":1}],'
               '"asks":[],"checksum":1}]}', 20, 4.0)
    sub.take(core)
    assert sub.status == {"BTC/USD": LIVE, "DOGE/USD": SYNCING}
    assert core.take_actions() == [Send(resub(spec_v2.SPEC, core.cfg, "DOGE/USD"))]
    # the venue refuses DOGE/USD: down with its reason; BTC/USD untouched
    core.frame('{"method":"subscribe","success":false,"error":"Currency pair not supported DOGE/USD",'
               '"symbol":"DOGE/USD","req_id":1}', 21, 4.1)
    sub.take(core)
    assert sub.status == {"BTC/USD": LIVE, "DOGE/USD": DOWN}
    assert core.streams["DOGE/USD"].reason == "refused by kraken: Currency pair not supported DOGE/USD"
