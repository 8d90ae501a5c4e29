"""Fuzz both Coinbase parsers (hypothesis, bounded) with mutated real frames: the Exchange
recording's frames, and the same data in Advanced Trade's shapes. Only ParseError may escape;
whatever parses keeps the level invariants; a ParseError's key is a product id or None; what a
PartialParseError keeps is itself valid; valid generated messages round-trip exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.feed.types import ConnSeq, Control, DepthEvent, ParseError, Snapshot
from services.feed_coinbase import parse_advanced as pa
from services.feed_coinbase import parse_exchange as pe
from services.feed_coinbase import wire
from services.feed_coinbase.wire import PartialParseError
from tests.test_feed_coinbase import AT_SNAPSHOT, BAD_EVENT, recording, to_advanced
from tests.test_fuzz_parsers import HOSTILE, LEVELS, check_venue_levels, mutate_bytes

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _samples() -> tuple[list[str], list[str]]:
    """A spread of real frames (every type, l2updates of every zero spelling, the smallest
    snapshot) and their Advanced Trade transcoding."""
    texts = recording()
    snaps = sorted((t for t in texts if '"type":"snapshot"' in t), key=len)
    picked = snaps[:1] + [t for t in texts if '"type":"snapshot"' not in t][::97]
    for kind in ("ticker", "match", "last_match", "subscriptions"):
        picked.append(next(t for t in texts if f'"type":"{kind}"' in t))
    advanced = [t for t in to_advanced(texts[:600], per_message=3, heartbeat_every=50) if len(t) < 20_000]
    return picked, [*advanced, AT_SNAPSHOT, BAD_EVENT % '{"side":"bid","price_level":"1","new_quantity":"2"}']


EXCHANGE, ADVANCED = _samples()


def check(out: object) -> None:
    """What a parser may return: frames whose levels are sane."""
    items = out if isinstance(out, list) else [out]
    for fr in items:
        if isinstance(fr, DepthEvent | Snapshot):
            assert isinstance(fr.key, str) and fr.key
            assert fr.ets >= 0 and fr.last >= 0
            check_venue_levels(fr.bids)
            check_venue_levels(fr.asks)
        else:
            assert isinstance(fr, Control | ConnSeq), fr
            if isinstance(fr, ConnSeq):
                assert isinstance(fr.n, int) and fr.n >= 0


def parse_all(raw: str | bytes) -> None:
    for parse in (pe.parse_frame, pa.parse_frame, wire.parse_exchange_products, wire.parse_advanced_products):
        try:
            out = parse(raw)
        except PartialParseError as e:
            assert e.key is None or isinstance(e.key, str)
            check(e.frames)
            if e.frames:
                assert isinstance(e.frames[0], ConnSeq) and e.key is not None
                assert all(not isinstance(f, DepthEvent | Snapshot) or f.key != e.key for f in e.frames)
            continue
        except ParseError as e:
            assert e.key is None or (isinstance(e.key, str) and e.key)
            continue
        if isinstance(out, dict):
            assert all(isinstance(k, str) and k == v.symbol for k, v in out.items())
        else:
            check(out)


def corrupt(doc: Any, data: st.DataObject) -> Any:
    """Replace (or remove) one value somewhere in ``doc`` with a hostile one."""
    doc = json.loads(json.dumps(doc))
    cur = doc
    while True:
        keys = list(cur) if isinstance(cur, dict) else list(range(len(cur)))
        if not keys:
            return doc
        k = data.draw(st.sampled_from(keys))
        if isinstance(cur[k], dict | list) and cur[k] and data.draw(st.booleans()):
            cur = cur[k]
            continue
        if isinstance(cur, dict) and data.draw(st.booleans()):
            del cur[k]
        else:
            cur[k] = data.draw(HOSTILE)
        return doc


@FAST
@given(st.sampled_from(EXCHANGE + ADVANCED), st.data())
def test_recorded_frames_bytes_mutated(text: str, data: st.DataObject) -> None:
    raw = mutate_bytes(data, text.encode())
    parse_all(raw)
    try:
        parse_all(raw.decode())
    except UnicodeDecodeError:
        pass


@FAST
@given(st.sampled_from(EXCHANGE + ADVANCED), st.data())
def test_recorded_frames_one_value_corrupted(text: str, data: st.DataObject) -> None:
    parse_all(json.dumps(corrupt(json.loads(text), data), allow_nan=True))


PRODUCT = st.sampled_from(["BTC-USD", "ETH-USD", "SKL-GBP", "DOGE-USDT"])


@st.composite
def advanced_l2(draw: st.DrawFn) -> tuple[str, list[object]]:
    """A valid l2_data message of 1-3 events and what it must parse to."""
    seq = draw(st.integers(0, 2**53))
    frac = draw(st.integers(0, 999_999_999))
    ets = 1675974770_000_000_000 + frac
    events, want = [], []
    for _ in range(draw(st.integers(1, 3))):
        pid, kind = draw(PRODUCT), draw(st.sampled_from(["snapshot", "update"]))
        bids, asks = draw(LEVELS), draw(LEVELS)
        events.append({"type": kind, "product_id": pid, "updates": [
            {"side": side, "event_time": "1970-01-01T00:00:00Z", "price_level": str(p), "new_quantity": str(q)}
            for side, lv in (("bid", bids), ("offer", asks)) for p, q in lv]})
        want.append(Snapshot(pid, 0, ets, bids, asks) if kind == "snapshot"
                    else DepthEvent(pid, seq, seq, ets, bids, asks))
    text = json.dumps({"channel": "l2_data", "timestamp": f"2023-02-09T20:32:50.{frac:09d}Z",
                       "sequence_num": seq, "events": events})
    return text, [ConnSeq(seq), *want]


@FAST
@given(advanced_l2())
def test_advanced_valid_messages_round_trip(case: tuple[str, list[object]]) -> None:
    text, want = case
    assert pa.parse_frame(text) == want


@FAST
@given(PRODUCT, LEVELS, LEVELS)
def test_exchange_valid_snapshot_and_update_round_trip(pid: str, bids: list[tuple[Decimal, Decimal]],
                                                       asks: list[tuple[Decimal, Decimal]]) -> None:
    snap = {"type": "snapshot", "product_id": pid, "bids": [[str(p), str(q)] for p, q in bids],
            "asks": [[str(p), str(q)] for p, q in asks]}
    assert pe.parse_frame(json.dumps(snap)) == Snapshot(pid, 0, 0, bids, asks)
    upd = {"type": "l2update", "product_id": pid, "time": "2021-04-17T16:43:37.075687Z",
           "changes": [["buy", str(p), str(q)] for p, q in bids] + [["sell", str(p), str(q)] for p, q in asks]}
    assert pe.parse_frame(json.dumps(upd)) == DepthEvent(pid, 0, 0, 1618677817075687000, bids, asks)
