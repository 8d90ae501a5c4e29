"""Fuzz Gemini's parse entry points with real recorded frames and REST answers, mutated (hypothesis,
bounded): only ParseError ever escapes; whatever parses keeps every level a finite, non-negative,
exact Decimal of sane length; a ParseError from a recognisable book update names its symbol; and
the FeedCore fed a mix of real and mutated frames never raises and never publishes a delta for a
symbol that is not live."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.feed.actions import Reconnect
from common.feed.core import FeedCore
from common.feed.runner import resolve_options
from common.feed.types import Control, DepthEvent, ParseError, Snapshot
from services.feed_gemini import pairs, parse_v2, parse_ws, spec_v2, spec_ws
from tests.replay_util import read_http, read_ws, recorded
from tests.test_feed_gemini_core import RECORDED_SYMBOLS, Subscriber, cfg
from tests.test_fuzz_parsers import HOSTILE, check_venue_levels, corrupt, dumps, mutate_bytes

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def v2_frames() -> tuple[str, ...]:
    """The recording's received frames, the big initial books cut to their first 12 changes (a
    mutation of a 30 KB frame mostly lands in the middle of a level list: the small ones find
    more), plus the initial books whole once each."""
    out = []
    for fr in read_ws(recorded("gemini") / "GEMINI.ws.1.0"):
        m = json.loads(fr.text)
        if "trades" in m:
            m["changes"], m["trades"] = m["changes"][:12], m["trades"][:2]
            out.append(json.dumps(m, separators=(",", ":")))
        else:
            out.append(fr.text)
    return tuple(out)


#: The WebSocket API's frames in the documented shapes (no real capture exists).
WS_FRAMES = (
    '{"e":"depthUpdate","E":1751508438600117161,"s":"btcusd","U":100,"u":105,"b":[["45000.50","1.25000000"]],'
    '"a":[["45001.00","0"],["45002","0.5"]]}',
    '{"id":1,"status":200,"result":null}',
    '{"id":1,"status":400,"error":{"code":-1013,"msg":"Invalid stream: foousd@depth@100ms"}}',
    '{"u":1751505576085,"E":1751508438600117161,"s":"btcusd","b":"45000.50","B":"1.25","a":"45001.00","A":"0.75"}',
    '{"lastUpdateId":12345678,"bids":[["45000.50","1.25000000"]],"asks":[["45001.00","0.75000000"]]}',
    '{"stream":"btcusd@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"btcusd","U":1,"u":1,"b":[],"a":[]}}',
)


@cache
def rest_bodies() -> tuple[str, ...]:
    return tuple(r.body for r in read_http(recorded("gemini") / "GEMINI.0"))


def check_value(out: object) -> None:
    """The invariant of anything a Gemini parser returns."""
    if isinstance(out, DepthEvent):
        assert isinstance(out.key, str) and out.key
        assert 0 <= out.first <= out.last and 0 <= out.ets < 2**63
        check_venue_levels(out.bids)
        check_venue_levels(out.asks)
    elif isinstance(out, Snapshot):
        assert isinstance(out.key, str) and out.key and out.last == 0 and out.ets == 0
        check_venue_levels(out.bids)
        check_venue_levels(out.asks)
    elif isinstance(out, pairs.ListedSymbols):
        assert all(isinstance(n, str) and pairs.VENUE_NAME.fullmatch(n) for n in out.names)
    elif isinstance(out, pairs.Details):
        assert out.info.symbol == "BTC/USD" and out.info.key == "btcusd"
        for d in (out.price_tick, out.qty_step):
            assert d is None or (d.is_finite() and d > 0)
    else:
        assert out is None or isinstance(out, Control), out


PARSERS: list[Callable[[Any], object]] = [
    parse_v2.parse_frame, parse_ws.parse_frame, spec_ws.parse_pairs, spec_v2.parse_pairs,
    lambda t: pairs.parse_details(t, "BTC/USD", parse_ws.key_of),
]


def parse_all(text: str | bytes) -> None:
    for f in PARSERS:
        try:
            out = f(text)
        except ParseError:
            continue
        check_value(out)


@MEDIUM
@given(st.data())
def test_recorded_frames_bytes_mutated(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(v2_frames() + WS_FRAMES))
    parse_all(mutate_bytes(data, text.encode()))


@MEDIUM
@given(st.data())
def test_recorded_frames_one_field_corrupted(data: st.DataObject) -> None:
    """One field (top level, a change, a level's part) replaced by a hostile value: ParseError or
    a sane value; an l2_updates / depthUpdate whose symbol survived names it in the ParseError."""
    text = data.draw(st.sampled_from(v2_frames() + WS_FRAMES))
    doc = json.loads(text)
    paths: list[list[Any]] = [[k] for k in doc]
    for lk in ("changes", "b", "a"):
        lv = doc.get(lk)
        if isinstance(lv, list) and lv:
            i = data.draw(st.integers(0, len(lv) - 1))
            paths += [[lk, i]] + [[lk, i, j] for j in range(len(lv[i]))]
    path = data.draw(st.sampled_from(paths))
    bad = dumps(corrupt(doc, path, data.draw(HOSTILE)))
    for parse, book_type, sym_field in ((parse_v2.parse_frame, "l2_updates", "symbol"),
                                        (parse_ws.parse_frame, "depthUpdate", "s")):
        try:
            out = parse(bad)
        except ParseError as e:
            bad_doc = json.loads(bad)
            sym = bad_doc.get(sym_field) if isinstance(bad_doc, dict) else None
            is_book = isinstance(bad_doc, dict) and book_type in (bad_doc.get("type"), bad_doc.get("e"))
            # NaN/Infinity make the text itself invalid JSON: no symbol can be named then
            if is_book and isinstance(sym, str) and 0 < len(sym) <= 40 and path[0] != sym_field \
                    and not str(e).startswith("not JSON"):
                assert e.key == (sym.upper() if parse is parse_v2.parse_frame else sym.lower()), (e, path)
            continue
        check_value(out)


@FAST
@given(st.data())
def test_rest_answers_mutated(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(rest_bodies()))
    parse_all(mutate_bytes(data, body.encode()))
    doc = json.loads(body)
    if isinstance(doc, dict):
        key = data.draw(st.sampled_from(sorted(doc)))
        parse_all(dumps(corrupt(doc, [key], data.draw(HOSTILE))))
    else:
        parse_all(dumps([data.draw(HOSTILE) if data.draw(st.booleans()) else s for s in doc[:8]]))


@FAST
@given(st.lists(st.tuples(st.integers(0, 10**9), st.booleans()), min_size=5, max_size=40), st.data())
def test_core_fed_real_and_mutated_frames_stays_consistent(picks: list[tuple[int, bool]],
                                                             data: st.DataObject) -> None:
    """FeedCore (v2 spec) fed real recorded frames, some mutated: it never raises; every bus
    stream's seq grows by one and no delta goes out for a symbol that is not live."""
    frames = v2_frames()
    c = cfg(RECORDED_SYMBOLS, "wss://api.gemini.com/v2/marketdata")
    core = FeedCore(spec_v2.SPEC, c, resolve_options(spec_v2.SPEC, c), sess=1)
    sub = Subscriber()
    core.start(0)
    core.connected(0.0, 0)
    core.take_actions()
    for n, (i, mutate) in enumerate(picks):
        text = frames[i % len(frames)]
        raw: str | bytes = mutate_bytes(data, text.encode()) if mutate else text
        core.frame(raw, n, 0.1 * n)
        sub.take(core)
        if any(isinstance(a, Reconnect) for a in core.take_actions()):
            core.disconnected("syncing", "reconnecting", n)
            core.connected(0.1 * n, n)
            core.take_actions()
            sub.take(core)
