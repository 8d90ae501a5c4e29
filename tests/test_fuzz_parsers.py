"""Fuzz every parse entry point (hypothesis, bounded) and replay the committed hostile corpus.

Entry points: Binance/Bitstamp ``parse_frame``, ``parse_snapshot``, ``parse_pairs``;
``common.schema.decode_feed`` / ``decode_feed_payload`` / ``decode_snapshot_request`` / ``unpack``;
``common.query.parse_request`` / ``decode_reply`` / ``split_envelope``.

Rules checked: only the documented error escapes (ParseError / BusError / QueryError); a valid
message round-trips exactly; a valid message with one field corrupted (or its bytes mutated) never
yields a level whose price or amount is not a finite ``Decimal``, is negative, NaN, a zero price or
has a canonical text too long to write (:data:`common.numbers.MAX_DECIMALS`).
tests/test_feed_fuzz.py already throws random JSON at the venue parsers; this file adds structured
near-valid inputs, byte mutations, the bus and query decoders and the corpus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import query, schema
from common.feed.types import Control, DepthEvent, PairInfo, ParseError, Snapshot
from common.numbers import MAX_ABS, MAX_DECIMALS, BadNumber, decimals, fmt, parse_decimal
from common.query import QueryError
from common.schema import BookMsg, BusError, HeartbeatMsg, StatusMsg
from services.feed_binance import parse as bparse
from services.feed_bitstamp import parse as sparse
from tests.fuzz_corpus import generate as gen

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- values ----------------------------------------------------------------------------------

#: Hostile scalars: bad numbers of every kind, wrong types, odd text.
HOSTILE_SCALARS: list[Any] = [
    "NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "-1", "-0.0001", "1e400", "1E+19",
    "1e-999999999999999999", "1E-2000000000", "0.0000000000000000001", "0", "-0", "", " ", "1 ", "0x10",
    "1_000", "\u0661", "1,5", "1.2.3", "\x00", "\u00e9", "9" * 400,
    -1, 0, 2**63, -(2**63), 1.5, float("nan"), float("inf"), True, False, None, [], {}, [[]], {"a": 1},
]
HOSTILE = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),   # what msgpack can carry
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.recursive(st.none() | st.booleans() | st.text(max_size=4) | st.integers(-5, 5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                 max_leaves=8),
)

PRICE = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000000"), places=8)
QTY = st.decimals(min_value=Decimal(0), max_value=Decimal("100000"), places=8)
LEVELS = st.lists(st.tuples(PRICE, QTY), max_size=6)


def check_levels(levels: list[tuple[Decimal, Decimal]]) -> None:
    """The invariant every parsed level keeps, whatever the input."""
    for p, q in levels:
        assert isinstance(p, Decimal) and isinstance(q, Decimal), (p, q)
        assert p.is_finite() and q.is_finite(), (p, q)
        assert p > 0 and q >= 0, (p, q)
        assert p <= MAX_ABS and q <= MAX_ABS, (p, q)


def check_venue_levels(levels: list[tuple[Decimal, Decimal]]) -> None:
    check_levels(levels)
    for p, q in levels:
        assert decimals(p) <= MAX_DECIMALS and decimals(q) <= MAX_DECIMALS, (p, q)
        assert len(fmt(p)) < 64 and len(fmt(q)) < 64


def check_venue_value(out: object) -> None:
    if isinstance(out, DepthEvent):
        assert isinstance(out.key, str) and out.key
        assert 0 <= out.first <= out.last and out.ets >= 0
        check_venue_levels(out.bids)
        check_venue_levels(out.asks)
    elif isinstance(out, Snapshot):
        assert out.last >= 0 and out.ets >= 0
        check_venue_levels(out.bids)
        check_venue_levels(out.asks)
    elif isinstance(out, dict):
        assert all(isinstance(k, str) and isinstance(v, PairInfo) for k, v in out.items())
    else:
        assert isinstance(out, Control), out


def check_feed_msg(msg: object) -> None:
    assert isinstance(msg, BookMsg | StatusMsg | HeartbeatMsg), msg
    assert isinstance(msg.venue, str) and isinstance(msg.sess, int) and not isinstance(msg.sess, bool)
    if isinstance(msg, BookMsg):
        assert msg.kind in (schema.SNAP, schema.DELTA)
        check_levels(msg.bids)
        check_levels(msg.asks)
    elif isinstance(msg, StatusMsg):
        assert msg.status in schema.STATUSES
    else:
        assert all(isinstance(k, str) and isinstance(v, int) for k, v in msg.seqs.items())


VENUE_PARSERS: list[Callable[[Any], object]] = [
    bparse.parse_frame, sparse.parse_frame,
    lambda t: bparse.parse_snapshot(t, "BTCUSDT"), lambda t: sparse.parse_snapshot(t, "btcusd"),
    bparse.parse_pairs, sparse.parse_pairs,
]


def venue_parse_all(text: str | bytes) -> None:
    for f in VENUE_PARSERS:
        try:
            out = f(text)
        except ParseError:
            continue
        check_venue_value(out)


def bus_decode(frames: list[bytes]) -> None:
    try:
        msg = schema.decode_feed(frames)
    except BusError:
        return
    check_feed_msg(msg)


def mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    """Delete, insert, flip or truncate a few bytes of ``raw``."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup"]))
        i = data.draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete" and b:
            del b[i]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "truncate":
            del b[i:]
        elif op == "dup":
            b[i:i] = b[i: i + data.draw(st.integers(1, 16))]
    return bytes(b)


# --- venue frames: structured, near-valid ----------------------------------------------------


def txt(levels: list[tuple[Decimal, Decimal]]) -> list[list[str]]:
    return [[str(p), str(q)] for p, q in levels]


@st.composite
def binance_depth(draw: st.DrawFn) -> tuple[dict[str, Any], DepthEvent]:
    first = draw(st.integers(0, 2**53))
    last = first + draw(st.integers(0, 1000))
    e_ms = draw(st.integers(0, 2**41))
    bids, asks = draw(LEVELS), draw(LEVELS)
    data = {"e": "depthUpdate", "E": e_ms, "s": "BTCUSDT", "U": first, "u": last, "b": txt(bids), "a": txt(asks)}
    return ({"stream": "btcusdt@depth@100ms", "data": data},
            DepthEvent("BTCUSDT", first, last, e_ms * 1_000_000, bids, asks))


@st.composite
def bitstamp_diff(draw: st.DrawFn) -> tuple[dict[str, Any], DepthEvent]:
    mt = draw(st.integers(1, 10**18))
    bids, asks = draw(LEVELS), draw(LEVELS)
    data = {"timestamp": str(mt // 10**6), "microtimestamp": str(mt), "bids": txt(bids), "asks": txt(asks)}
    return ({"data": data, "channel": "diff_order_book_btcusd", "event": "data"},
            DepthEvent("btcusd", mt, mt, mt * 1000, bids, asks))


def corrupt(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return doc


def dumps(doc: Any) -> str:
    return json.dumps(doc, allow_nan=True)


@FAST
@given(binance_depth())
def test_binance_valid_depth_round_trips(case: tuple[dict[str, Any], DepthEvent]) -> None:
    doc, expected = case
    assert bparse.parse_frame(dumps(doc)) == expected


@FAST
@given(bitstamp_diff())
def test_bitstamp_valid_diff_round_trips(case: tuple[dict[str, Any], DepthEvent]) -> None:
    doc, expected = case
    assert sparse.parse_frame(dumps(doc)) == expected


B_FIELDS = [["data", k] for k in ("e", "E", "s", "U", "u", "b", "a")] + [["stream"], ["data"]]
S_FIELDS = [["data", k] for k in ("microtimestamp", "bids", "asks")] + [["channel"], ["event"], ["data"]]


@MEDIUM
@given(binance_depth(), st.sampled_from(B_FIELDS), HOSTILE)
def test_binance_one_field_corrupted(case: tuple[dict[str, Any], DepthEvent], path: list[Any], value: Any) -> None:
    venue_parse_all(dumps(corrupt(case[0], path, value)))


@MEDIUM
@given(bitstamp_diff(), st.sampled_from(S_FIELDS), HOSTILE)
def test_bitstamp_one_field_corrupted(case: tuple[dict[str, Any], DepthEvent], path: list[Any],
                                      value: Any) -> None:
    venue_parse_all(dumps(corrupt(case[0], path, value)))


@MEDIUM
@given(st.sampled_from(["binance", "bitstamp"]), st.data())
def test_one_level_value_corrupted(venue: str, data: st.DataObject) -> None:
    """A price or an amount inside a level replaced: a ParseError naming the symbol, or a valid event."""
    doc, _ = data.draw(binance_depth() if venue == "binance" else bitstamp_diff())
    side = ("b", "a") if venue == "binance" else ("bids", "asks")
    key = data.draw(st.sampled_from(side))
    levels = doc["data"][key] or [["1", "1"]]
    i = data.draw(st.integers(0, len(levels) - 1))
    j = data.draw(st.integers(0, 1))
    levels[i][j] = data.draw(HOSTILE)
    doc["data"][key] = levels
    parse = bparse.parse_frame if venue == "binance" else sparse.parse_frame
    try:
        out = parse(dumps(doc))
    except ParseError as e:
        # NaN/Infinity floats make the text itself invalid JSON (no symbol to name then)
        assert e.key == ("BTCUSDT" if venue == "binance" else "btcusd") or str(e).startswith("not JSON")
    else:
        check_venue_value(out)


@MEDIUM
@given(st.sampled_from(["binance", "bitstamp"]), st.data())
def test_venue_frame_bytes_mutated(venue: str, data: st.DataObject) -> None:
    doc, _ = data.draw(binance_depth() if venue == "binance" else bitstamp_diff())
    venue_parse_all(mutate_bytes(data, dumps(doc).encode()))


@FAST
@given(st.data())
def test_snapshots_one_field_corrupted(data: st.DataObject) -> None:
    bids, asks = data.draw(LEVELS), data.draw(LEVELS)
    b = {"lastUpdateId": data.draw(st.integers(0, 2**60)), "bids": txt(bids), "asks": txt(asks)}
    s = {"timestamp": "1", "microtimestamp": str(data.draw(st.integers(0, 10**18))), "bids": txt(bids),
         "asks": txt(asks)}
    assert bparse.parse_snapshot(dumps(b), "BTCUSDT").bids == bids
    assert sparse.parse_snapshot(dumps(s), "btcusd").asks == asks
    for doc, keys in ((b, ["lastUpdateId", "bids", "asks"]), (s, ["microtimestamp", "bids", "asks"])):
        bad = corrupt(doc, [data.draw(st.sampled_from(keys))], data.draw(HOSTILE))
        venue_parse_all(dumps(bad))
        venue_parse_all(mutate_bytes(data, dumps(doc).encode()))


@FAST
@given(st.lists(st.fixed_dictionaries({}, optional={
    "symbol": HOSTILE | st.just("BTCUSDT"), "baseAsset": HOSTILE | st.just("BTC"),
    "quoteAsset": HOSTILE | st.just("USDT"), "status": HOSTILE | st.just("TRADING"),
    "name": HOSTILE | st.just("BTC/USD"), "url_symbol": HOSTILE | st.just("btcusd"),
    "trading": HOSTILE | st.just("Enabled")}), max_size=5))
def test_pair_lists_with_wrong_types(entries: list[dict[str, Any]]) -> None:
    for text in (dumps({"symbols": entries}), dumps(entries)):
        venue_parse_all(text)
        for f in (bparse.parse_pairs, sparse.parse_pairs):
            try:
                out = f(text)
            except ParseError:
                continue
            for sym, p in out.items():
                assert sym == p.symbol and isinstance(p.key, str) and p.key


def test_tiny_exponent_from_a_venue_is_a_parse_error_naming_the_symbol() -> None:
    """Regression (found by this fuzzer): ``"1E-999999999999999999"`` is finite, positive and below
    MAX_ABS, so it was accepted, went on the bus, and the aggregator's canonical text of it (every
    published level goes through ``fmt``) needs 10^18 characters: MemoryError, aggregator down."""
    for lv in (["43000.1", "1E-999999999999999999"], ["1E-2000000000", "1"], ["1", "0." + "0" * 18 + "1"]):
        with pytest.raises(ParseError) as e:
            bparse.parse_frame(dumps(corrupt(json.loads(CORPUS.joinpath("binance_frame/qty_nan.json").read_text()),
                                             ["data", "b"], [lv])))
        assert e.value.key == "BTCUSDT" and "decimals" in str(e.value)
    ok = bparse.parse_frame(b'{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":1,"b":[["0.000000000000000001",'
                            b'"0E-50"]],"a":[["1.500000000000000000000000","0.10"]]}')
    assert isinstance(ok, DepthEvent) and ok.bids == [(Decimal("1E-18"), Decimal(0))]
    assert ok.asks == [(Decimal("1.5"), Decimal("0.1"))]


# --- bus ---------------------------------------------------------------------------------------

TEXT_ID = st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True)
SYMBOL = st.tuples(st.text(alphabet="ABCDEFXYZ", min_size=2, max_size=5),
                   st.text(alphabet="ABCDEFXYZ", min_size=2, max_size=5)).map("/".join)
I64 = st.integers(0, 2**63 - 1)


EXACT = st.none() | st.tuples(st.none() | PRICE, st.none() | PRICE)


@st.composite
def feed_msgs(draw: st.DrawFn) -> schema.FeedMsg:
    kind = draw(st.sampled_from(["snap", "delta", "status", "hb"]))
    venue, sess, rts = draw(TEXT_ID), draw(I64), draw(I64)
    if kind == "hb":
        return HeartbeatMsg(venue, sess, rts, draw(st.dictionaries(SYMBOL, I64, max_size=3)),
                            draw(st.sampled_from(["", "online", "cancel_only"])))
    symbol, seq = draw(SYMBOL), draw(I64)
    if kind == "status":
        return StatusMsg(venue, symbol, sess, seq, draw(st.sampled_from(sorted(schema.STATUSES))),
                         draw(st.text(max_size=20)), rts)
    bids = [(p, q) for p, q in draw(LEVELS)]
    return BookMsg(kind, venue, symbol, sess, seq, draw(I64), rts, bids, draw(LEVELS), draw(EXACT))


#: What each position of a feed array must hold (schema 2), per message type: "int" (a msgpack
#: int, not a bool), "str", "ver", or "any" (checked by the decoder's own rules: levels, seqs...).
POSITION_TYPES = {
    "snap": ["tag", "ver", "str", "int", "str", "int", "int", "int", "any", "any", "any"],
    "delta": ["tag", "ver", "str", "int", "str", "int", "int", "int", "any", "any", "any"],
    "status": ["tag", "ver", "str", "int", "str", "int", "int", "any", "str"],
    "hb": ["tag", "ver", "str", "int", "int", "any", "any"],
}


def fits(kind: str, value: Any) -> bool:
    """Whether ``value`` is of the type position ``kind`` holds (msgpack's int range included)."""
    if kind == "int":
        return type(value) is int and -(2**63) <= value < 2**64
    if kind == "str":
        return type(value) is str
    if kind == "ver":
        return type(value) is int and value == schema.SCHEMA_VERSION
    return True


@MEDIUM
@given(feed_msgs())
def test_bus_valid_messages_round_trip(msg: schema.FeedMsg) -> None:
    """Every valid message decodes to itself; the plain-data payload packs to the same bytes."""
    frames = schema.encode_feed(msg)
    assert schema.decode_feed(frames) == msg
    assert schema.pack(schema.feed_payload(msg)) == frames[1]
    assert schema.decode_feed_payload(schema.unpack(frames[1])) == msg


@MEDIUM
@given(feed_msgs(), st.data(), HOSTILE | st.binary(max_size=8), st.sampled_from(["set", "remove", "append"]))
def test_bus_one_position_corrupted_removed_or_added(msg: schema.FeedMsg, data: st.DataObject, value: Any,
                                                     op: str) -> None:
    """One position of a valid array replaced by a hostile value, removed, or one added: a value of
    the wrong type, a missing or an extra position is always a BusError; anything accepted is valid."""
    topic, payload = schema.encode_feed(msg)
    m = msgpack.unpackb(payload, raw=False)
    types = POSITION_TYPES[m[0]]
    i = data.draw(st.integers(0, len(m) - 1))
    if op == "set":
        same_layout = {m[0], value} <= {"snap", "delta"} if type(value) is str else False
        must_fail = not same_layout if i == 0 else not fits(types[i], value)
        m[i] = value
    elif op == "remove":
        del m[i]
        # dropping the last of the optional trailing positions (exact-to, mode) leaves a valid message
        must_fail = not (i == len(m) and len(m) >= len(types) - 1)
    else:
        m.append(value)
        must_fail = len(m) > len(types)
    raw = msgpack.packb(m, use_bin_type=True)
    for decode in (lambda: schema.decode_feed([topic, raw]), lambda: schema.decode_feed_bytes(raw)):
        try:
            out = decode()
        except BusError:
            continue
        assert not must_fail, (m, out)
        check_feed_msg(out)


@MEDIUM
@given(feed_msgs(), st.data())
def test_bus_payload_bytes_mutated(msg: schema.FeedMsg, data: st.DataObject) -> None:
    topic, payload = schema.encode_feed(msg)
    bus_decode([topic, mutate_bytes(data, payload)])
    bus_decode([mutate_bytes(data, topic), payload])


@FAST
@given(st.lists(st.binary(max_size=40), max_size=4), feed_msgs())
def test_bus_wrong_frame_counts_and_topics(frames: list[bytes], msg: schema.FeedMsg) -> None:
    topic, payload = schema.encode_feed(msg)
    bus_decode(frames)
    bus_decode([*frames, payload])
    bus_decode([topic, payload, *frames])
    if frames:
        bus_decode([frames[0], payload])


@MEDIUM
@given(st.integers(0, 60), st.sampled_from(["b", "a"]), st.integers(0, 1), HOSTILE | st.decimals().map(str))
def test_bus_level_number_as_strict_as_parse_decimal(n: int, side: str, j: int, value: Any) -> None:
    """One number of a side of ``n`` levels (short lists and the long-list path) replaced: the
    message decodes exactly when parse_decimal takes the text (and a price is not 0)."""
    levels = [[str(1000 + i) if side == "a" else str(1000 - i), "1.5"] for i in range(n + 1)]
    levels[n][j] = value
    m = ["delta", 2, "alpha", 1, "BTC/USDT", 1, 0, 0, levels if side == "b" else [], levels if side == "a" else []]
    try:
        want = parse_decimal(value) if type(value) is str else None
        ok = want is not None and (j == 1 or want != 0)
    except BadNumber:
        ok = False
    raw = msgpack.packb(m, use_bin_type=True)
    if not ok:
        with pytest.raises(BusError):
            schema.decode_feed_bytes(raw)
        return
    out = schema.decode_feed_bytes(raw)
    assert isinstance(out, BookMsg)
    got = (out.bids if side == "b" else out.asks)[n][j]
    assert got == want and str(got) == str(want)


@FAST
@given(st.one_of(st.binary(max_size=64), HOSTILE.map(lambda v: msgpack.packb(v, use_bin_type=True)),
                 st.lists(HOSTILE, max_size=4).map(lambda s: msgpack.packb({"t": "snapreq", "s": s}))))
def test_snapshot_request_decoder(raw: bytes) -> None:
    try:
        syms = schema.decode_snapshot_request(raw)
    except BusError:
        return
    assert isinstance(syms, list) and all(isinstance(s, str) for s in syms)


@pytest.mark.parametrize("n", [1, 40])
def test_bus_levels_decode_the_same_from_the_memo(n: int) -> None:
    """A message decoded twice (the second time from the level memos, or the long-list path) gives
    the very Decimals parse_decimal gives; a refused text is refused every time (never memoised)."""
    texts = [("43000.10", "0E-8"), ("1E-8", "0.00000"), ("1E+2", "1.500000000000000000000000"), ("7", "0")]
    levels = [list(texts[i % len(texts)]) for i in range(n)]
    raw = msgpack.packb(["delta", 2, "alpha", 1, "BTC/USDT", 1, 0, 0, levels, levels], use_bin_type=True)
    want = [(parse_decimal(p), parse_decimal(q)) for p, q in levels]
    for _ in range(2):
        out = schema.decode_feed_bytes(raw)
        assert isinstance(out, BookMsg) and out.bids == want and out.asks == want
        assert [(str(p), str(q)) for p, q in out.bids] == [(str(p), str(q)) for p, q in want]
    for bad in (["0", "1"], ["1", "-0.5"], ["1", "NaN"]):
        raw = msgpack.packb(["delta", 2, "alpha", 1, "BTC/USDT", 1, 0, 0, [*levels, bad], []], use_bin_type=True)
        for _ in range(2):
            with pytest.raises(BusError, match="'b': "):
                schema.decode_feed_bytes(raw)


def test_bus_level_with_a_tiny_exponent_is_a_bus_error() -> None:
    """A finite, tiny quantity whose plain text needs 10^18 characters is refused on the bus too."""
    m = schema.feed_payload(BookMsg("delta", "alpha", "BTC/USDT", 1, 1, 0, 0, [], []))
    m[9] = [["101", "1E-999999999999999999"]]
    with pytest.raises(BusError, match="more than 18 decimals"):
        schema.decode_feed([b"md.alpha.BTC/USDT", msgpack.packb(m, use_bin_type=True)])


@pytest.mark.parametrize("ver", [True, 2.0, "2", 1, 3, -2, None])
def test_bus_version_must_be_the_int(ver: object) -> None:
    """Position 1 is the schema version, the int 2 exactly; anything else names the version."""
    m = schema.feed_payload(BookMsg("delta", "alpha", "BTC/USDT", 1, 1, 0, 0, [], []))
    m[1] = ver
    with pytest.raises(BusError, match=f"schema version {re.escape(repr(ver))}, expected 2"):
        schema.decode_feed([b"md.alpha.BTC/USDT", msgpack.packb(m, use_bin_type=True)])


def test_bus_schema_1_message_is_a_clear_bus_error() -> None:
    """A message of a feed still on schema 1 (a map) is refused with a line that says so."""
    v1 = {"ver": 1, "t": "delta", "v": "alpha", "sess": 1, "s": "BTC/USDT", "seq": 1, "ets": 0, "rts": 0,
          "b": [], "a": []}
    with pytest.raises(BusError, match=re.escape("payload is a map (feed-bus schema 1?), expected the array "
                                                 "of schema 2")):
        schema.decode_feed([b"md.alpha.BTC/USDT", msgpack.packb(v1, use_bin_type=True)])


# --- query -------------------------------------------------------------------------------------

NUM_TEXT = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6).map(fmt)


@st.composite
def requests_(draw: st.DrawFn) -> dict[str, Any]:
    m: dict[str, Any] = {"op": "deplete", "symbol": draw(SYMBOL), "side": draw(st.sampled_from(["buy", "sell"]))}
    m[draw(st.sampled_from(["quantity", "notional"]))] = draw(NUM_TEXT)
    extra = draw(st.sampled_from([None, "venue", "venues", "ver"]))
    if extra == "venue":
        m["venue"] = draw(TEXT_ID)
    elif extra == "venues":
        m["venues"] = "all"
    elif extra == "ver":
        m["ver"] = 1
    return m


Q_KEYS = ["op", "symbol", "side", "quantity", "notional", "venue", "venues", "ver", "other"]


def check_parsed_request(raw: bytes) -> None:
    try:
        r = query.parse_request(raw)
    except QueryError as e:
        assert str(e)
        return
    assert (r.quantity is None) != (r.notional is None)
    size = r.quantity if r.quantity is not None else r.notional
    assert isinstance(size, Decimal) and size.is_finite() and 0 < size <= MAX_ABS
    assert r.side in ("buy", "sell") and not (r.venue and r.all_venues)


@MEDIUM
@given(requests_(), st.sampled_from(Q_KEYS), HOSTILE | st.binary(max_size=8), st.booleans())
def test_query_request_one_key_corrupted(m: dict[str, Any], key: str, value: Any, remove: bool) -> None:
    assert query.parse_request(msgpack.packb(m, use_bin_type=True)) is not None
    if remove:
        m.pop(key, None)
    else:
        m[key] = value
    check_parsed_request(msgpack.packb(m, use_bin_type=True))


@MEDIUM
@given(requests_(), st.data())
def test_query_request_bytes_mutated(m: dict[str, Any], data: st.DataObject) -> None:
    check_parsed_request(mutate_bytes(data, msgpack.packb(m, use_bin_type=True)))


@FAST
@given(st.integers(1, 1 << 16), st.binary(min_size=1, max_size=8))
def test_query_oversized_request(extra: int, fill: bytes) -> None:
    raw = (fill * (query.MAX_REQUEST_BYTES // len(fill) + extra))[: query.MAX_REQUEST_BYTES + extra]
    with pytest.raises(QueryError, match="limit"):
        query.parse_request(raw)


@FAST
@given(st.one_of(st.binary(max_size=64), st.dictionaries(st.sampled_from(["ok", "epoch", "seq", "symbol",
                                                                           "merged", "venues", "statuses",
                                                                           "error"]), HOSTILE, max_size=8)
                 .map(lambda m: msgpack.packb(m, use_bin_type=True))))
def test_query_reply_decoder(raw: bytes) -> None:
    try:
        r = query.decode_reply(raw)
    except QueryError:
        return
    assert isinstance(r.ok, bool)
    if r.ok:
        assert isinstance(r.epoch, int) and isinstance(r.seq, int) and isinstance(r.symbol, str)
    else:
        assert isinstance(r.error, str)


@FAST
@given(st.lists(st.binary(max_size=6), max_size=6))
def test_split_envelope_any_frames(frames: list[bytes]) -> None:
    envelope, body = query.split_envelope(frames)
    assert envelope == frames[: len(envelope)]
    if body is not None:
        assert [*envelope, body] == frames


# --- the corpus --------------------------------------------------------------------------------


def corpus(folder: str) -> list[Path]:
    files = sorted((CORPUS / folder).iterdir())
    assert files, folder
    return files


def test_corpus_is_small_and_documented() -> None:
    readme = (CORPUS / "README.md").read_text()
    for f in CORPUS.glob("*/*"):
        assert f.stat().st_size <= 8192, f
        assert f"`{f.name}`" in readme, f


@pytest.mark.parametrize("folder", ["binance_frame", "bitstamp_frame", "binance_snapshot", "bitstamp_snapshot",
                                    "pairs"])
def test_corpus_venue_text(folder: str) -> None:
    for f in corpus(folder):
        raw = f.read_bytes()
        venue_parse_all(raw)
        try:
            venue_parse_all(raw.decode())
        except UnicodeDecodeError:
            pass


def test_corpus_venue_depth_frames_are_rejected() -> None:
    """Every hand-made bad depth frame is a ParseError (none is a valid event by accident), except
    the two that are valid on purpose."""
    for folder, parse in (("binance_frame", bparse.parse_frame), ("bitstamp_frame", sparse.parse_frame)):
        for f in corpus(folder):
            try:
                out = parse(f.read_bytes())
            except ParseError:
                continue
            if f.name == "unknown_fields.json":    # unknown keys are ignored: a valid event
                assert isinstance(out, DepthEvent), f
                continue
            # "\u00dfUSDT".upper() is "SSUSDT": a valid event of a symbol nobody carries (the
            # runner counts it as unknown_symbol and drops it)
            assert isinstance(out, Control) or (isinstance(out, DepthEvent) and out.key == "SSUSDT"), f


def test_corpus_bus_bases_are_valid() -> None:
    """The valid messages the bus corpus corrupts decode (so the corpus cannot pass vacuously)."""
    for base in (gen.FEED_OK, gen.SNAP_OK, gen.STATUS_OK, gen.HB_OK):
        check_feed_msg(schema.decode_feed_bytes(gen.pk(base)))
    assert isinstance(schema.decode_feed([b"md.alpha.BTC/USDT", gen.pk(gen.FEED_OK)]), BookMsg)


@pytest.mark.parametrize("case", gen.BUS_PAYLOAD, ids=[c[0] for c in gen.BUS_PAYLOAD])
def test_corpus_bus_payload(case: tuple[str, bytes, str, str]) -> None:
    """Each hostile payload on disk is the generator's and is a BusError for the reason it was made."""
    name, raw, _what, why = case
    assert (CORPUS / "bus_payload" / name).read_bytes() == raw, f"{name}: regenerate the corpus"
    with pytest.raises(BusError, match=re.escape(why)):
        schema.decode_feed([b"md.alpha.BTC/USDT", raw])
    with pytest.raises(BusError, match=re.escape(why)):
        schema.decode_feed_bytes(raw)


def test_corpus_bus() -> None:
    for f in corpus("bus_payload"):
        raw = f.read_bytes()
        with pytest.raises(BusError):
            schema.decode_feed([b"md.alpha.BTC/USDT", raw])
        try:
            obj = schema.unpack(raw)
        except BusError:
            continue
        with pytest.raises(BusError):
            schema.decode_feed_payload(obj)
    for f in corpus("bus_frames"):
        with pytest.raises(BusError):
            schema.decode_feed(msgpack.unpackb(f.read_bytes(), raw=True))


def test_corpus_snapshot_requests() -> None:
    for f in corpus("snapreq"):
        try:
            syms = schema.decode_snapshot_request(f.read_bytes())
        except BusError:
            continue
        assert f.name in ("dup_symbols.bin", "unknown_symbols.bin") and all(isinstance(s, str) for s in syms)


def test_corpus_query() -> None:
    for f in corpus("query_request"):
        with pytest.raises(QueryError):
            query.parse_request(f.read_bytes())
    for f in corpus("query_reply"):
        try:
            r = query.decode_reply(f.read_bytes())
        except QueryError:
            continue
        assert not r.ok and isinstance(r.error, str), f
