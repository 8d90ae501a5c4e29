"""Deterministic replay of a capture folder: every captured feed session through its own real
:class:`~common.feed.core.FeedCore` (:mod:`common.feed.replay`), and their bus messages through
the real aggregator's merge and depletion -- in one process, one step per captured input, with
the captured clocks.

The aggregator is :class:`~services.aggregator.service.Aggregator` itself, driven through its
handlers (``on_feed``, ``on_snapshot_reply``, ``on_timer``, ``publish_dirty``) instead of its poll
loop. Its sockets are bound to private ``inproc://`` endpoints and never read; its snapshot
requests are answered from the replayed feed cores at once; its output goes to a recorder; its
clocks (epoch, the time a feed was last heard) are the capture's. So the same capture gives the
same published books, byte for byte, on every run: :attr:`ReplayResult.digest` covers every
published snapshot (bids, asks, venues, depletion, times).

Feed sessions run interleaved by wall-clock receive time (one host's captures share a clock).
After each input: the feed's messages go to the aggregator, pending snapshot requests are
answered, timers run (``down_after`` with the captured clock), and every changed book is
published.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import zmq

from common.config import Config, SecurityConfig, VenueConfig
from common.feed.capture import INPUTS, CaptureRun
from common.feed.replay import FeedReplay, Verdict, merged, verify_runs
from common.schema import FeedMsg, MergedBook, decode_merged, encode_feed, feed_payload, pack
from services.aggregator.service import Aggregator, Link

log = logging.getLogger("replay")


class _Recorder:
    """Stands in for the aggregator's PUB socket: keeps every published snapshot."""

    def __init__(self) -> None:
        self.count = 0
        self.hash = hashlib.sha256()
        self.last: dict[str, list[bytes]] = {}
        self.keep: list[list[bytes]] | None = None

    def send_multipart(self, frames: list[bytes]) -> None:
        self.count += 1
        for f in frames:
            self.hash.update(len(f).to_bytes(8, "little"))
            self.hash.update(f)
        self.last[bytes(frames[0]).decode()[len("book."):]] = list(frames)
        if self.keep is not None:
            self.keep.append(list(frames))

    def close(self, linger: int = 0) -> None:
        pass


class ReplayAggregator(Aggregator):
    """The real aggregator with its clocks, snapshot requests and output taken over by the
    replay (see the module docstring)."""

    def __init__(self, cfg: Config, *, start_ns: int) -> None:
        self.requests: list[tuple[str, list[str]]] = []
        self.clock_ns = start_ns
        self._zctx = zmq.Context()
        super().__init__(cfg, ctx=self._zctx)
        self.epoch = start_ns
        real_pub = self.pub
        self.poller.unregister(real_pub)
        real_pub.close(0)
        self.recorder = _Recorder()
        self.pub = self.recorder  # type: ignore[assignment]  # only send_multipart is used
        for lk in self.links:
            lk.last_heard = start_ns / 1e9

    def _request_snapshot(self, link: Link, symbols: list[str], now: float) -> None:
        if not symbols:
            return
        for sym in symbols:
            s = self.states[sym].streams[link.venue]
            s.awaiting = True
            s.requested_at = now
            self.states[sym].dirty = True
        self._count("snapshot_requests")
        self.requests.append((link.venue, list(symbols)))

    def _heard(self, link: Link, sess: int, now: float) -> None:
        super()._heard(link, sess, now)
        link.heard_ns = self.clock_ns

    def close(self) -> None:
        super().close()
        self._zctx.term()


def replay_config(base: Config, runs: list[CaptureRun]) -> Config:
    """``base`` (levels, depletion sizes, down_after) with the captured venues, each on private
    inproc endpoints; a venue split over shards becomes one feed link carrying every symbol."""
    tag = uuid.uuid4().hex[:12]
    venues: dict[str, VenueConfig] = {}
    symbols: dict[str, None] = {}
    for r in runs:
        vc = r.cfg
        symbols.update(dict.fromkeys(vc.symbols))
        old = venues.get(vc.id)
        syms = tuple(dict.fromkeys([*(old.symbols if old else ()), *vc.symbols]))
        venues[vc.id] = dataclasses.replace(vc, symbols=syms, enabled=True, shards=(),
                                            pub=f"inproc://replay-{tag}-{vc.id}-pub",
                                            ctl=f"inproc://replay-{tag}-{vc.id}-ctl")
    agg = dataclasses.replace(base.aggregator, pub=f"inproc://replay-{tag}-agg-pub",
                              ctl=f"inproc://replay-{tag}-agg-ctl", query=f"inproc://replay-{tag}-agg-query")
    return dataclasses.replace(base, symbols=tuple(symbols), venues=venues, aggregator=agg,
                               security=SecurityConfig())


@dataclass
class ReplayResult:
    """A deterministic replay: the feed-level verdict against the recorded run, and what the
    aggregator published."""

    verdict: Verdict
    published: int = 0
    digest: str = ""
    books: dict[str, MergedBook] = field(default_factory=dict)
    payloads: list[list[bytes]] | None = None
    span_s: float = 0.0              # wall-clock span of the capture
    seconds: float = 0.0             # replay time

    @property
    def frames_per_s(self) -> float:
        return self.verdict.frames / self.seconds if self.seconds else 0.0

    @property
    def speedup(self) -> float:
        """Captured time / replay time (x real time)."""
        return self.span_s / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        v = self.verdict
        return (f"{v.inputs} inputs ({v.frames} frames) in {self.seconds:.2f} s: {self.frames_per_s:,.0f} "
                f"frames/s, {self.speedup:,.1f}x real time ({self.span_s:.1f} s captured); per-venue books "
                f"{'EQUAL' if v.book_mismatches == 0 else 'DIFFERENT'} to the recorded run after every input "
                f"({v.book_checks} checks, {v.book_mismatches} mismatches; bus byte-identical in "
                f"{v.inputs - v.bus_mismatches}/{v.inputs} steps); aggregator published {self.published} "
                f"books, digest {self.digest[:16]}")


def replay(runs: list[CaptureRun], base: Config, *, keep: bool = False) -> ReplayResult:
    """Replay ``runs`` deterministically through feed cores and the aggregator (module
    docstring). ``keep``: also return every published snapshot's frames."""
    first = next((int(rec[2]) for r in runs for rec in r.records() if rec[0] in INPUTS), 0)
    last = 0
    cfg = replay_config(base, runs)
    feeds = [FeedReplay(r) for r in runs]
    agg = ReplayAggregator(cfg, start_ns=first)
    if keep:
        agg.recorder.keep = []
    current: dict[str, FeedReplay] = {}

    def answer(now: float) -> None:
        still = []
        for venue, symbols in agg.requests:
            fr = current.get(venue)
            if fr is None:
                still.append((venue, symbols))
                continue
            frames = [pack(feed_payload(m)) for m in fr.reply(symbols, agg.clock_ns)]
            if frames:
                agg.on_snapshot_reply(venue, frames, now)
        agg.requests = still

    def on_step(i: int, rec: list[Any], msgs: list[FeedMsg]) -> None:
        nonlocal last
        rts = int(rec[2])
        last = max(last, rts)
        agg.clock_ns = rts
        now = rts / 1e9
        fr = feeds[i]
        current[fr.cfg.id] = fr
        for m in msgs:
            agg.on_feed(encode_feed(m), now)
        if agg.requests:
            answer(now)
        agg.on_timer(now)
        if agg.requests:
            answer(now)
        agg.publish_dirty()

    t0 = time.perf_counter()
    try:
        verdict = verify_runs(runs, feeds=feeds, on_step=on_step)
    finally:
        agg.close()
    seconds = time.perf_counter() - t0
    books = {sym: decode_merged(frames) for sym, frames in agg.recorder.last.items()}
    return ReplayResult(verdict, agg.recorder.count, agg.recorder.hash.hexdigest(), books, agg.recorder.keep,
                        span_s=max(0.0, (last - first) / 1e9), seconds=seconds)


__all__ = ["ReplayAggregator", "ReplayResult", "merged", "replay", "replay_config"]
