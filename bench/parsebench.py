"""Section 1: each feed's frame path (parse + sequencer + book apply + crossed check, exactly the
calls ``FeedRunner.on_frame``/``_on_event`` make) against plain ``orjson.loads`` of the same
frames, in alternating passes so both see the same machine."""

from __future__ import annotations

import statistics
import time
from typing import Any

import orjson

from bench.frames import Stream
from common.book import Book
from common.feed.types import DepthEvent, Snapshot, Verdict
from common.schema import DELTA, BookMsg, encode_feed


def _spec(kind: str) -> Any:
    if kind == "binance":
        from services.feed_binance.spec import SPEC
    else:
        from services.feed_bitstamp.spec import SPEC
    return SPEC


class _State:
    __slots__ = ("book", "seqr")

    def __init__(self, seqr: Any, book: Book) -> None:
        self.seqr = seqr
        self.book = book


def _prime(spec: Any, streams: list[Stream]) -> dict[str, _State]:
    """Per symbol a synced sequencer at ``start_id`` and the starting book (outside the timing)."""
    out = {}
    for st in streams:
        seqr = spec.sequencer()
        seqr.on_event(DepthEvent(st.key, st.start_id, st.start_id, 0))
        verdict, _ = seqr.on_snapshot(Snapshot(st.key, st.start_id, 0, [], []))
        assert verdict is Verdict.SYNCED, verdict
        book = Book()
        book.load(st.bids, st.asks)
        out[st.key] = _State(seqr, book)
    return out


def run(kind: str, streams: list[Stream], *, passes: int = 7, source: str = "generated") -> dict[str, Any]:
    spec = _spec(kind)
    parse_frame = spec.parse_frame
    frames = [f for st in streams for f in st.frames]
    # interleave symbols like a combined stream: round-robin over the streams' frames
    order: list[str] = []
    iters = [iter(st.frames) for st in streams]
    while iters:
        nxt = []
        for it in iters:
            f = next(it, None)
            if f is not None:
                order.append(f)
                nxt.append(it)
        iters = nxt
    frames = order
    levels = 0
    for f in frames:
        d = orjson.loads(f)
        d = d.get("data", d)
        levels += len(d.get("b", d.get("bids", []))) + len(d.get("a", d.get("asks", [])))
    t_feed: list[float] = []
    t_json: list[float] = []
    verdicts: dict[str, int] = {}
    apply_v = Verdict.APPLY
    for i in range(passes):
        states = _prime(spec, streams)
        loads = orjson.loads
        t0 = time.perf_counter()
        for f in frames:
            loads(f)
        t_json.append(time.perf_counter() - t0)
        counts = {v: 0 for v in Verdict}
        t0 = time.perf_counter()
        for f in frames:
            fr = parse_frame(f)
            st = states.get(fr.key)
            if st is None:
                continue
            v = st.seqr.on_event(fr)
            counts[v] += 1
            if v is apply_v:
                st.book.apply_levels(fr.bids, fr.asks)
                st.book.crossed()
        t_feed.append(time.perf_counter() - t0)
        if i == 0:
            verdicts = {v.value: n for v, n in counts.items() if n}
    # the publish step the runner adds per applied event (msgpack of the bus delta), for reference
    sample = [parse_frame(f) for f in frames[:2000]]
    t0 = time.perf_counter()
    sizes = 0
    for ev in sample:
        if isinstance(ev, DepthEvent):
            sizes += len(encode_feed(BookMsg(DELTA, kind, "BTC/USDT", 1, 1, ev.ets, time.time_ns(), ev.bids,
                                             ev.asks))[1])
    t_encode = (time.perf_counter() - t0) / max(1, len(sample))
    feed = statistics.median(t_feed)
    js = statistics.median(t_json)
    n = len(frames)
    return {
        "source": source, "frames": n, "symbols": len(streams), "levels_per_frame": round(levels / n, 2),
        "feed_frames_per_s": round(n / feed), "feed_levels_per_s": round(levels / feed),
        "orjson_frames_per_s": round(n / js), "orjson_levels_per_s": round(levels / js),
        "feed_us_per_frame": round(feed / n * 1e6, 2), "orjson_us_per_frame": round(js / n * 1e6, 2),
        "ratio": round(js / feed, 3), "verdicts": verdicts,
        "encode_us_per_frame": round(t_encode * 1e6, 2), "bus_delta_bytes": round(sizes / max(1, len(sample)), 1),
    }
