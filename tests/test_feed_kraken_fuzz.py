"""Fuzz the Kraken parsers (hypothesis, bounded) from real recorded frames: mutated bytes, one field
replaced by a hostile value, and random valid v2 books. Rules: only ParseError escapes; a value
that parses keeps every invariant (finite Decimals, price > 0, sane exponents, 32-bit checksums,
known control kinds); a corrupted book item names its symbol; the checksum of whatever parses
never raises; a valid v2 frame round-trips exactly, wire digits included."""

from __future__ import annotations

import json
import re
import zlib
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.book import Book
from common.feed.types import Control, ControlKind, DepthEvent, ParseError, Snapshot
from common.numbers import MAX_ABS, MAX_DECIMALS, decimals, fmt
from services.feed_kraken import checksum as ck
from services.feed_kraken import parse_v1, parse_v2
from tests.replay_util import read_ws, recorded

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _v1_frames() -> list[str]:
    """A sample of every recorded v1 shape: status, acks, heartbeat, small snapshots, one- and
    two-dict updates, republish levels (the SDK file), pong."""
    ws = [w.text for w in read_ws(recorded("kraken") / "KRAKEN.ws.50.0")]
    snaps = sorted((t for t in ws if '"as"' in t), key=len)[:2]
    two = [t for t in ws if '"a"' in t and '"b"' in t][:5]
    one = [t for t in ws if '"c"' in t][:20]
    ctrl = [t for t in ws if t.startswith("{")][:12]
    sdk = json.loads((recorded("kraken") / "python-kraken-sdk_orderbook-v1.json").read_text())
    republish = [json.dumps(u, separators=(",", ":")) for u in sdk["updates"] if '"r"' in json.dumps(u)][:10]
    init = [json.dumps(u, separators=(",", ":")) for u in sdk["init"]]
    return ctrl + snaps + two + one + republish + init


def _v2_frames() -> list[str]:
    sdk = json.loads((recorded("kraken") / "python-kraken-sdk_orderbook-v2.json").read_text())
    vec = json.loads((recorded("kraken").parent.parent / "kraken_checksum_examples.json").read_text())
    raw = [v["raw_frame"] for v in vec["vectors"] if "raw_frame" in v]
    book = [json.dumps(x, separators=(",", ":")) for x in [sdk["init"], *sdk["updates"][:30]]]
    ctrl = [
        '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online","api_version":"v2",'
        '"connection_id":15483510049470446170}]}',
        '{"channel":"heartbeat"}',
        '{"method":"pong","req_id":4,"time_in":"2023-10-04T07:48:25.000000Z","time_out":"2023-10-04T07:48:25Z"}',
        '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"BTC/USD"},'
        '"success":true,"time_in":"2023-10-04T07:48:25Z","time_out":"2023-10-04T07:48:25Z","req_id":1}',
        '{"method":"subscribe","success":false,"error":"Currency pair not supported BTC/XYZ","symbol":"BTC/XYZ",'
        '"req_id":1}',
        '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":"BTC/USD","base":"BTC",'
        '"quote":"USD","status":"online","qty_precision":8,"qty_increment":0.00000001,"price_precision":1,'
        '"cost_precision":5,"tick_size":0.1,"price_increment":0.1,"qty_min":0.0001}]}}',
    ]
    return raw + book + ctrl


V1_FRAMES = _v1_frames()
V2_FRAMES = _v2_frames()

HOSTILE_SCALARS: list[Any] = [
    "NaN", "Infinity", "-1", "-0.0001", "1e400", "1E+19", "1e-999999999", "0.0000000000000000001", "0", "-0",
    "", " ", "0x10", "1_000", "\u0661", "1,5", "9" * 400, "5.0E-7",
    -1, 0, 2**32, 2**64, -(2**63), 1.5, -1.5, 1e30, 1e-30, True, False, None, [], {}, [[]], {"a": 1},
]
HOSTILE = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


def check_levels(levels: list[tuple[Decimal, Decimal]]) -> None:
    for p, q in levels:
        assert type(p) is Decimal and type(q) is Decimal, (p, q)
        assert p.is_finite() and q.is_finite(), (p, q)
        assert p > 0 and q >= 0 and p <= MAX_ABS and q <= MAX_ABS, (p, q)
        assert decimals(p) <= MAX_DECIMALS and decimals(q) <= MAX_DECIMALS, (p, q)
        assert len(fmt(p)) < 64 and len(fmt(q)) < 64


def check_out(out: object) -> None:
    """The invariants of anything a parser returns, and the checksum of it never raises."""
    for it in out if isinstance(out, list) else [out]:
        if isinstance(it, Snapshot | DepthEvent):
            assert isinstance(it.key, str) and it.key
            assert it.ets >= 0
            assert it.checksum is None or 0 <= it.checksum < 2**32
            check_levels(it.bids)
            check_levels(it.asks)
            b = Book()
            b.load(it.bids, it.asks)
            b.check()
            for prec in (None, (0, 0), (8, 8), (18, 18)):
                assert 0 <= ck.checksum(b, prec) < 2**32
        else:
            assert isinstance(it, Control), it
            assert isinstance(it.kind, ControlKind) and isinstance(it.detail, str)
            assert it.key is None or (isinstance(it.key, str) and it.key)
            if it.kind is ControlKind.INSTRUMENT:
                assert isinstance(it.value, tuple) and all(isinstance(x, int) and 0 <= x <= 18 for x in it.value)


def parse_any(parse: Any, text: str | bytes) -> ParseError | None:
    try:
        out = parse(text)
    except ParseError as e:
        return e
    check_out(out)
    return None


def mutate(data: st.DataObject, raw: bytes) -> bytes:
    """Delete, insert, flip, truncate or duplicate a few bytes of ``raw``."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup"]))
        i = data.draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete" and b:
            del b[i]
        elif op == "insert":
            b[i:i] = data.draw(st.sampled_from([b"0", b".", b"-", b"e9", b'"', b",", b"[", b"{", b"}", b"]", b"\xff"]))
        elif op == "truncate":
            del b[i:]
        elif op == "dup":
            b[i:i] = b[i: i + data.draw(st.integers(1, 16))]
    return bytes(b)


@MEDIUM
@given(st.sampled_from(V1_FRAMES), st.data())
def test_v1_recorded_frames_bytes_mutated(frame: str, data: st.DataObject) -> None:
    """Mutated bytes of a recorded v1 frame: a valid value or a ParseError, nothing else."""
    parse_any(parse_v1.parse_frame, mutate(data, frame.encode()))


@MEDIUM
@given(st.sampled_from(V2_FRAMES), st.data())
def test_v2_recorded_frames_bytes_mutated(frame: str, data: st.DataObject) -> None:
    """Mutated bytes of a recorded v2 frame: a valid value or a ParseError, nothing else."""
    parse_any(parse_v2.parse_frame, mutate(data, frame.encode()))


@FAST
@given(st.sampled_from(V1_FRAMES + V2_FRAMES), st.data())
def test_each_parser_on_the_other_apis_frames(frame: str, data: st.DataObject) -> None:
    """A v1 frame given to the v2 parser and the reverse (a misconfigured api): no crash."""
    parse_any(parse_v1.parse_frame, frame)
    parse_any(parse_v2.parse_frame, frame)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``doc`` (dict keys and list indices)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value


def _book_key(frame: str, v1: bool) -> str | None:
    doc = json.loads(frame)
    if v1:
        return doc[-1] if isinstance(doc, list) and isinstance(doc[-1], str) and doc[-2].startswith("book") else None
    if isinstance(doc, dict) and doc.get("channel") == "book":
        return doc["data"][0]["symbol"]
    return None


@MEDIUM
@given(st.sampled_from([(f, True) for f in V1_FRAMES[:60]] + [(f, False) for f in V2_FRAMES]), st.data())
def test_one_value_replaced_by_a_hostile_one(case: tuple[str, bool], data: st.DataObject) -> None:
    """Any one value of a recorded frame replaced: a valid value, or a ParseError that names the
    book's symbol (unless the symbol itself or the frame's shape was hit, or the text is no longer
    JSON)."""
    frame, v1 = case
    doc = json.loads(frame, parse_float=Decimal)
    paths = _paths(doc)
    path = data.draw(st.sampled_from(paths))
    value = data.draw(HOSTILE)
    _set(doc, path, value)
    text = _dumps_exact(doc)
    err = parse_any(parse_v1.parse_frame if v1 else parse_v2.parse_frame, text)
    key = _book_key(frame, v1)
    if err is None or key is None:
        return
    hit_symbol = (v1 and path in ((len(doc) - 1,), (len(doc) - 2,))) or (not v1 and path[-1:] == ("symbol",))
    shape = len(path) <= (1 if v1 else 2)   # the array itself, or data / the item replaced whole
    if not hit_symbol and not shape and not str(err).startswith("not JSON"):
        assert err.key == key, (path, value, err)


def _dumps_exact(doc: Any) -> str:
    """JSON with each Decimal written as its own token (as Kraken's v2 wire does)."""
    marks: list[str] = []

    def enc(o: Any) -> Any:
        if isinstance(o, Decimal):
            marks.append(format(o, "f") if o.is_finite() else str(o))
            return f"\x00{len(marks) - 1}\x00"
        raise TypeError(type(o).__name__)

    text = json.dumps(doc, default=enc, allow_nan=True)
    return re.sub(r'"\\u0000(\d+)\\u0000"', lambda m: marks[int(m.group(1))], text)


PRICE_TEXT = st.builds(lambda i, f, n: f"{i}.{str(f).zfill(n)[:n]}" if n else str(i),
                       st.integers(0, 10**6), st.integers(0, 10**12), st.integers(0, 12))


@FAST
@given(st.lists(st.tuples(PRICE_TEXT, PRICE_TEXT), max_size=12), st.lists(st.tuples(PRICE_TEXT, PRICE_TEXT),
                                                                          max_size=12))
def test_valid_v2_books_round_trip_with_their_wire_digits(bids: list[tuple[str, str]],
                                                          asks: list[tuple[str, str]]) -> None:
    """A v2 snapshot built from number tokens parses to Decimals that print back the same tokens,
    and its checksum equals the CRC of those tokens by hand."""
    bids = list({Decimal(p): (p, q) for p, q in reversed(bids) if Decimal(p) > 0}.values())  # one text per price
    asks = list({Decimal(p): (p, q) for p, q in reversed(asks) if Decimal(p) > 0}.values())
    lv = lambda xs: ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in xs)  # noqa: E731
    frame = (f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"X/Y","bids":[{lv(bids)}],'
             f'"asks":[{lv(asks)}],"checksum":0}}]}}')
    snap = parse_v2.parse_frame(frame)
    assert isinstance(snap, Snapshot)
    assert [(format(p, "f"), format(q, "f")) for p, q in snap.bids] == bids
    assert [(format(p, "f"), format(q, "f")) for p, q in snap.asks] == asks
    b = Book()
    b.load(snap.bids, snap.asks)

    def text(levels: list[tuple[str, str]], rev: bool) -> str:
        keep = sorted((lvl for lvl in levels if Decimal(lvl[1])), key=lambda lvl: Decimal(lvl[0]), reverse=rev)[:10]
        return "".join(p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0") for p, q in keep)

    assert ck.checksum(b) == zlib.crc32((text(asks, False) + text(bids, True)).encode())


@MEDIUM
@given(st.decimals(min_value=Decimal("1E-18"), max_value=Decimal("1E+12"), allow_nan=False, allow_infinity=False),
       st.none() | st.integers(0, 18))
def test_checksum_digits_equal_the_plain_definition(d: Decimal, places: int | None) -> None:
    """digits() (string operations) equals the definition: the value at ``places`` decimals when
    it fits without rounding, else its own text; point removed, leading zeros stripped."""
    if places is not None and decimals(d) <= places:
        text = format(d, f".{places}f")
    else:
        text = format(d, "f")
    assert ck.digits(d, places) == text.replace(".", "").lstrip("0")
