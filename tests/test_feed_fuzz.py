"""Malformed input: every venue parse function either returns a value or raises ParseError,
never any other exception (random JSON, wrong types, NaN/negative/huge numbers, truncated text)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from common.feed.types import Control, DepthEvent, ParseError
from services.feed_binance import parse as bparse
from services.feed_bitstamp import parse as sparse

NUMBERS = st.one_of(
    st.sampled_from(["NaN", "-1", "1e999", "Infinity", "-0", "0", "1e30", "", "0x10", "1_0", " 1", "١"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | NUMBERS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)

BINANCE_GOOD = json.loads('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
                          '"U":5,"u":6,"b":[["1.5","2"]],"a":[["1.6","0"]]}}')
BITSTAMP_GOOD = json.loads('{"data":{"timestamp":"1","microtimestamp":"1641343691310202","bids":[["1.5","2"]],'
                           '"asks":[]},"channel":"diff_order_book_btcusd","event":"data"}')

PARSERS = [bparse.parse_frame, sparse.parse_frame, lambda t: bparse.parse_snapshot(t, "X"),
           lambda t: sparse.parse_snapshot(t, "x"), bparse.parse_pairs, sparse.parse_pairs]


def only_parse_errors(text: str | bytes) -> None:
    for f in PARSERS:
        try:
            out = f(text)
        except ParseError:
            continue
        assert out is not None
        if isinstance(out, DepthEvent):
            assert all(p > 0 and q >= 0 for p, q in out.bids + out.asks)
        else:
            assert isinstance(out, Control | dict) or hasattr(out, "last")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    only_parse_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    only_parse_errors(raw)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_random_json(obj: object) -> None:
    only_parse_errors(json.dumps(obj))


def mutate(base: dict, path: list[str], value: object) -> dict:
    doc = json.loads(json.dumps(base))
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return doc


FIELDS_B = [["data", f] for f in ("e", "E", "s", "U", "u", "b", "a")] + [["stream"], ["data"]]
FIELDS_S = [["data", f] for f in ("microtimestamp", "bids", "asks")] + [["channel"], ["event"], ["data"]]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FIELDS_B), JSONISH)
def test_binance_wrong_field_values(path: list[str], value: object) -> None:
    only_parse_errors(json.dumps(mutate(BINANCE_GOOD, path, value)))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FIELDS_S), JSONISH)
def test_bitstamp_wrong_field_values(path: list[str], value: object) -> None:
    only_parse_errors(json.dumps(mutate(BITSTAMP_GOOD, path, value)))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["b", "a"]), st.lists(st.lists(NUMBERS, max_size=3), max_size=3))
def test_binance_weird_levels_fail_with_the_symbol(side: str, lv: list) -> None:
    text = json.dumps(mutate(BINANCE_GOOD, ["data", side], lv))
    try:
        ev = bparse.parse_frame(text)
    except ParseError as e:
        assert e.key == "BTCUSDT"
    else:
        assert isinstance(ev, DepthEvent)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400))
def test_truncated_frames(n: int) -> None:
    for good in (json.dumps(BINANCE_GOOD), json.dumps(BITSTAMP_GOOD)):
        only_parse_errors(good[:n])


def test_deep_nesting_is_a_parse_error() -> None:
    only_parse_errors("[" * 5000 + "]" * 5000)
    only_parse_errors('{"a":' * 3000 + "1" + "}" * 3000)


def test_huge_integer_is_a_parse_error() -> None:
    only_parse_errors('{"stream":"btcusdt@depth","data":{"e":"depthUpdate","s":"BTCUSDT","U":' + "9" * 400
                      + ',"u":1,"b":[],"a":[]}}')
