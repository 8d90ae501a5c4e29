"""Bitstamp: parsing, the microtimestamp sync rule (EQUAL is dropped), and a replay of the real
recording compared with an independent dict-based reference book."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from common.book import ASK, BID
from common.config import VenueConfig
from common.feed.types import ControlKind, DepthEvent, ParseError, Snapshot, Verdict
from services.feed_bitstamp import parse
from services.feed_bitstamp import spec as sspec
from services.feed_bitstamp.sync import BitstampSequencer
from tests.replay_util import (
    exchange_time,
    read_http,
    read_ws,
    recorded,
    ref_apply,
    ref_levels,
    ref_sorted,
    replay,
)

# pair -> (older, equal, newer) diffs relative to its snapshot (the recording's README table)
TABLE = {
    "bateur": (14, 0, 75), "adaeur": (5, 0, 57), "batbtc": (25, 0, 111), "ethusd": (11, 1, 73),
    "xlmgbp": (13, 0, 60), "xrpeur": (5, 1, 64), "usdtusd": (13, 0, 61), "usdteur": (12, 0, 89),
    "galaeur": (2, 0, 25), "sgbeur": (0, 0, 0),
}
# The two diffs stamped EXACTLY at their snapshot's microtimestamp: both must be dropped.
EQUAL = {"ethusd": 1641343695681418, "xrpeur": 1641343694033567}


def load():
    d = recorded("bitstamp")
    frames = read_ws(d / "BITSTAMP.ws.1.0")
    snaps = [(h.ts, h.url.rstrip("/").rsplit("/", 1)[1], h.body) for h in read_http(d / "BITSTAMP.http.0.0")]
    return frames, snaps


def reference(frames, snap_body: str, key: str):
    """By hand: stdlib json, dicts, Decimal; diffs of ``key`` with int(mt) > snapshot mt."""
    snap = json.loads(snap_body)
    bids, asks = ref_levels(snap["bids"]), ref_levels(snap["asks"])
    smt = int(snap["microtimestamp"])
    for fr in frames:
        m = json.loads(fr.text)
        if m.get("channel") != f"diff_order_book_{key}" or m.get("event") != "data":
            continue
        if int(m["data"]["microtimestamp"]) > smt:
            ref_apply(bids, m["data"]["bids"])
            ref_apply(asks, m["data"]["asks"])
    return ref_sorted(bids, True), ref_sorted(asks, False)


def test_recording_drops_older_and_equal_diffs_and_applies_newer() -> None:
    """Per pair: dropped = older + equal diffs, applied = newer, as in the README table; the two
    diffs equal to their snapshot's microtimestamp are among the dropped."""
    frames, snaps = load()
    result = replay(sspec.SPEC, frames, snaps, exchange_time)
    smts = {key: int(json.loads(body)["microtimestamp"]) for _, key, body in snaps}
    # sgbeur sent no diff at all: nothing proves its snapshot current, so it is refused (syncing).
    assert not result["sgbeur"].synced and result["sgbeur"].refused == 1
    for key, (older, equal, newer) in TABLE.items():
        if key == "sgbeur":
            continue
        st = result[key]
        assert st.synced and st.syncs == 1, key
        assert len(st.dropped) == older + equal and len(st.applied) == newer, key
        assert all(e.last <= smts[key] for e in st.dropped) and all(e.last > smts[key] for e in st.applied)
        assert sum(e.last == smts[key] for e in st.dropped) == equal
    for key, mt in EQUAL.items():
        assert mt in [e.last for e in result[key].dropped]
        assert mt not in [e.last for e in result[key].applied]


def test_recording_buffers_diffs_before_the_snapshot() -> None:
    """With arrival estimated by exchange time, the diffs that came before each REST answer were
    buffered (this is what a resync buffered in the recording)."""
    frames, snaps = load()
    result = replay(sspec.SPEC, frames, snaps, exchange_time)
    counts = {k: result[k].buffered_at_sync[0] for k in TABLE}
    assert counts == {"bateur": 19, "adaeur": 7, "batbtc": 25, "ethusd": 14, "xlmgbp": 16, "xrpeur": 11,
                      "usdtusd": 16, "usdteur": 15, "galaeur": 2, "sgbeur": 0}


def test_recording_book_equals_reference() -> None:
    frames, snaps = load()
    result = replay(sspec.SPEC, frames, snaps, exchange_time)
    for _, key, body in snaps:
        if key == "sgbeur":    # no diff in the recording: never synced (see above)
            continue
        book = result[key].book
        ref_bids, ref_asks = reference(frames, body, key)
        assert book.levels(BID) == ref_bids, key
        assert book.levels(ASK) == ref_asks, key
        book.check()
        assert not book.crossed()


# --- the sequencer --------------------------------------------------------------------------


def ev(mt: int) -> DepthEvent:
    return DepthEvent("btcusd", mt, mt, mt * 1000, [], [])


def test_snapshot_refused_until_a_diff_proves_it_current() -> None:
    """With nothing buffered a lagging REST answer cannot be told from a current one: refetch."""
    s = BitstampSequencer()
    assert s.on_snapshot(Snapshot("btcusd", 99, 0, [], [])) == (Verdict.REFETCH, [])
    assert s.on_event(ev(100)) is Verdict.BUFFERED
    assert s.on_snapshot(Snapshot("btcusd", 101, 0, [], []))[0] is Verdict.SYNCED


def test_buffer_then_refetch_while_snapshot_older_than_first_diff_keeping_the_buffer() -> None:
    s = BitstampSequencer()
    assert s.on_event(ev(100)) is Verdict.BUFFERED
    assert s.on_event(ev(105)) is Verdict.BUFFERED
    assert s.on_snapshot(Snapshot("btcusd", 99, 0, [], [])) == (Verdict.REFETCH, [])
    assert s.buffered == 2
    verdict, events = s.on_snapshot(Snapshot("btcusd", 100, 0, [], []))
    assert verdict is Verdict.SYNCED and [e.last for e in events] == [105]  # 100 == snapshot: dropped


def test_equal_microtimestamp_is_dropped_live_too() -> None:
    """mt == snapshot mt: the snapshot already contains that diff."""
    s = BitstampSequencer()
    assert s.on_event(ev(499)) is Verdict.BUFFERED
    assert s.on_snapshot(Snapshot("btcusd", 500, 0, [], [])) == (Verdict.SYNCED, [])
    assert s.on_event(ev(499)) is Verdict.DROP
    assert s.on_event(ev(500)) is Verdict.DROP
    assert s.on_event(ev(501)) is Verdict.APPLY
    assert s.position == 500


def test_reset_goes_back_to_buffering() -> None:
    s = BitstampSequencer()
    assert s.on_event(ev(6)) is Verdict.BUFFERED
    assert s.on_snapshot(Snapshot("btcusd", 7, 0, [], [])) == (Verdict.SYNCED, [])
    s.reset()
    assert s.position is None and s.on_event(ev(8)) is Verdict.BUFFERED


# --- parsing ------------------------------------------------------------------------------


def test_symbol_mapping_urls_and_subscribe() -> None:
    cfg = VenueConfig(id="bitstamp", kind="bitstamp", enabled=True, symbols=("BTC/USD",),
                      ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9/api/v2/", pub="inproc://p",
                      ctl="inproc://c", stale_after=10.0, depth=5000, taker_fee=Decimal(0), cpu=None)
    assert parse.key_of("BTC/USDT") == "btcusdt"
    assert sspec.ws_url(cfg, ["btcusd"]) == "ws://127.0.0.1:9"
    assert sspec.snapshot_url(cfg, "btcusd") == "http://127.0.0.1:9/api/v2/order_book/btcusd/"
    assert sspec.pairs_url(cfg) == "http://127.0.0.1:9/api/v2/trading-pairs-info/"
    assert [json.loads(f) for f in sspec.subscribe(cfg, ["btcusd", "ethusd"])] == [
        {"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusd"}},
        {"event": "bts:subscribe", "data": {"channel": "diff_order_book_ethusd"}}]
    assert json.loads(sspec.SPEC.heartbeat_frame or "") == {"event": "bts:heartbeat"}


def test_parse_diff_exact() -> None:
    fr = parse.parse_frame('{"data":{"timestamp":"1641343691","microtimestamp":"1641343691310202","bids":[],'
                           '"asks":[["1.17438","853.01809477"],["1.17484","0.00000000"]]},'
                           '"channel":"diff_order_book_adaeur","event":"data"}')
    assert fr == DepthEvent("adaeur", 1641343691310202, 1641343691310202, 1641343691310202000, [],
                            [(Decimal("1.17438"), Decimal("853.01809477")), (Decimal("1.17484"), Decimal(0))])


def test_control_frames() -> None:
    k = ControlKind
    assert parse.parse_frame('{"event":"bts:subscription_succeeded","channel":"diff_order_book_ethusd",'
                             '"data":{}}').kind is k.ACK
    assert parse.parse_frame('{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}').kind \
        is k.HEARTBEAT
    assert parse.parse_frame('{"event":"bts:request_reconnect","channel":"","data":""}').kind is k.RECONNECT
    assert parse.parse_frame('{"event":"bts:request_reconnect","channel":"","data":{}}').kind is k.RECONNECT
    err = parse.parse_frame('{"event":"bts:error","channel":"",'
                            '"data":{"code":null,"message":"Incorrect JSON format."}}')
    assert err.kind is k.ERROR and "Incorrect JSON format." in err.detail
    assert parse.parse_frame('{"event":"trade","channel":"live_trades_ethusd","data":{}}').kind is k.IGNORE


@pytest.mark.parametrize("bad", [
    '"microtimestamp":"12a","bids":[],"asks":[]', '"microtimestamp":1.5,"bids":[],"asks":[]',
    '"microtimestamp":"1","bids":[["1","-2"]],"asks":[]', '"microtimestamp":"1","bids":[["x","1"]],"asks":[]',
    '"microtimestamp":"1","bids":{},"asks":[]', '"bids":[],"asks":[]',
])
def test_bad_diff_names_the_pair(bad: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse.parse_frame('{"data":{' + bad + '},"channel":"diff_order_book_btcusd","event":"data"}')
    assert ei.value.key == "btcusd"


def test_snapshot_parse_and_errors() -> None:
    s = parse.parse_snapshot(b'{"timestamp":"1","microtimestamp":"1641343695572693","bids":[["0.14695","1"]],'
                             b'"asks":[]}', "sgbeur")
    assert s.last == 1641343695572693 and s.ets == 1641343695572693000
    for bad in (b'{"status":"error","reason":"x"}', b'{"microtimestamp":"x","bids":[],"asks":[]}', b'[1]'):
        with pytest.raises(ParseError):
            parse.parse_snapshot(bad, "x")


def test_pair_check_on_the_real_pair_list() -> None:
    pairs = parse.parse_pairs(read_http(recorded("bitstamp") / "BITSTAMP.0")[0].body)
    assert pairs["BTC/USD"].key == "btcusd" and pairs["BTC/USD"].trading
    for sym in ("SGB/EUR", "ETH/USD", "XRP/EUR", "BAT/EUR", "USDT/EUR", "USDT/USD", "XLM/GBP", "ADA/EUR",
                "BAT/BTC", "GALA/EUR"):
        assert pairs[sym].trading, sym
    assert "DOGE/USD" not in pairs  # not in the 2022 pair list
    dis = parse.parse_pairs(b'[{"name":"ABC/EUR","url_symbol":"abceur","trading":"Disabled"}]')
    assert not dis["ABC/EUR"].trading and dis["ABC/EUR"].status == "Disabled"
