"""Deterministic replay of a capture (:mod:`common.feed.capture`) through the real
:class:`~common.feed.core.FeedCore`: no sockets, no clock, no randomness that reaches the bus.

One step per captured input, in capture order, with the captured clocks (monotonic ``now`` and
wall-clock ``rts``): a frame goes to ``core.frame``, a REST snapshot answer to
``core.snapshot_body`` (or ``snapshot_failed``), a tick to ``core.tick``, and so on; the actions
the core asks for (send, fetch, reconnect) are dropped, because what the transport made of them
-- the answers, the new connection -- is itself in the capture. After each step the bus messages
the core queued are taken, exactly as the transport took them.

:func:`verify_run` checks a replay against the recorded run: after every step, the messages must
be the very bytes the feed published then (``bus`` records), and every (venue, symbol) book
rebuilt from the replay's messages must equal the book rebuilt from the recorded messages.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common import venues
from common.feed.capture import (
    BUS,
    CLOSE,
    FLUSH,
    HB,
    INPUTS,
    OPEN,
    REKEY,
    REST,
    SNAPREQ,
    START,
    STOP,
    TICK,
    UNLIST,
    WS,
    CaptureError,
    CaptureRun,
)
from common.feed.core import FeedCore
from common.schema import (
    DOWN,
    LIVE,
    SNAP,
    BookMsg,
    FeedMsg,
    HeartbeatMsg,
    StatusMsg,
    decode_feed_bytes,
    encode_feed_payload,
)

Side = dict[Decimal, Decimal]


class FeedReplay:
    """One captured feed session replayed through a new FeedCore of the same spec, config,
    options and session number."""

    def __init__(self, run: CaptureRun, *, log: logging.Logger | None = None) -> None:
        h = run.header
        self.run = run
        try:
            self.spec = venues.load_spec(h["kind"], h.get("api") or None)
        except (KeyError, venues.UnknownVenue) as e:
            raise CaptureError(f"{run.paths[0]}: header names no known venue kind/api: {e}") from None
        self.cfg = run.cfg
        self.core = FeedCore(self.spec, self.cfg, run.opts, sess=int(h["sess"]),
                             log=log or logging.getLogger(f"replay.feed.{run.venue}"), rng=random.Random(0))
        self.steps = 0
        self.frames = 0

    def step(self, rec: list[Any]) -> list[FeedMsg]:
        """Apply one captured input; return the bus messages it produced (none for a ``bus``
        record, which is output, not input)."""
        kind = rec[0]
        if kind not in INPUTS:
            return []
        core = self.core
        mono, rts = float(rec[1]), int(rec[2])
        self.steps += 1
        if kind == WS:
            self.frames += 1
            core.frame(rec[3], rts, mono)
        elif kind == TICK:
            core.tick(mono, rts)
        elif kind == FLUSH:
            core.flush()
        elif kind == HB:
            core.heartbeat(rts)
        elif kind == REST:
            symbol, body, error, delay = rec[4], rec[6], rec[7], rec[8]
            if symbol is not None and symbol in core.streams:   # None: the pair check (see unlist/rekey)
                if body is not None:
                    core.snapshot_body(symbol, body, rts)
                else:
                    core.snapshot_failed(symbol, str(error), delay)
        elif kind == OPEN:
            core.connected(mono, rts)
        elif kind == CLOSE:
            core.disconnected(rec[3], rec[4], rts)
        elif kind == SNAPREQ:
            core.snapshot_reply(list(rec[3]), rts)
        elif kind == START:
            core.start(rts)
        elif kind == UNLIST:
            core.unlist(core.streams[rec[3]], rec[4], rts)
        elif kind == REKEY:
            core.rekey(core.streams[rec[3]], rec[4])
        elif kind == STOP:
            for st in core.streams.values():
                if st.listed:
                    core.out.status(st, DOWN, "feed stopping", rts)
        core.take_actions()
        return core.take_bus()

    def reply(self, symbols: list[str], rts: int) -> list[FeedMsg]:
        """What the feed's ROUTER would answer a snapshot request with, WITHOUT flushing (a
        flush is an input of its own): a live stream's snap carries the updates applied since
        the last flush, with the current seq; the delta of the next flush repeats them (sizes
        are absolute, so applying them twice changes nothing)."""
        core = self.core
        out: list[FeedMsg] = []
        for s in dict.fromkeys(symbols) if symbols else list(core.streams):
            st = core.streams.get(s)
            if st is None:
                continue
            if st.status == LIVE:
                out.append(core.out.snap_msg(st, core.depth is not None))
            else:
                out.append(StatusMsg(self.cfg.id, s, core.sess, st.seq, st.status, st.reason, rts))
        return out


# --- books rebuilt from bus messages ----------------------------------------------------------


class BusBooks:
    """Every (venue, symbol) book as a subscriber of the feed bus rebuilds it: a snap replaces
    it, a delta applies absolute sizes (0 removes), a status other than live empties it."""

    def __init__(self) -> None:
        self.books: dict[tuple[str, str], tuple[Side, Side]] = {}
        self.status: dict[tuple[str, str], str] = {}

    def apply(self, msg: FeedMsg) -> tuple[str, str] | None:
        """Apply one message; returns the (venue, symbol) it touched (None: a heartbeat)."""
        if isinstance(msg, HeartbeatMsg):
            return None
        key = (msg.venue, msg.symbol)
        if isinstance(msg, StatusMsg):
            self.status[key] = msg.status
            if msg.status != LIVE:
                self.books[key] = ({}, {})
            return key
        assert isinstance(msg, BookMsg)
        if msg.kind == SNAP:
            self.status[key] = LIVE
            self.books[key] = ({p: q for p, q in msg.bids if q}, {p: q for p, q in msg.asks if q})
            return key
        bids, asks = self.books.setdefault(key, ({}, {}))
        for side, levels in ((bids, msg.bids), (asks, msg.asks)):
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
        return key

    def get(self, key: tuple[str, str]) -> tuple[Side, Side]:
        return self.books.get(key, ({}, {}))


def decode(payload: bytes) -> FeedMsg:
    return decode_feed_bytes(payload)


def encode(msg: FeedMsg) -> bytes:
    return encode_feed_payload(msg)


# --- verification -----------------------------------------------------------------------------


@dataclass
class Verdict:
    """How a deterministic replay compared with the recorded run."""

    inputs: int = 0
    frames: int = 0
    bus_messages: int = 0             # recorded bus messages compared
    book_checks: int = 0              # (step, venue book) comparisons made
    book_mismatches: int = 0
    bus_mismatches: int = 0           # steps whose messages were not byte-identical to the recording
    first_mismatch: str | None = None
    seconds: float = 0.0
    truncated: bool = False
    books: dict[tuple[str, str], tuple[Side, Side]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return self.book_mismatches == 0 and self.bus_mismatches == 0 and self.inputs > 0


def _diff(key: tuple[str, str], want: tuple[Side, Side], got: tuple[Side, Side]) -> str:
    out = []
    for name, w, g in (("bids", want[0], got[0]), ("asks", want[1], got[1])):
        missing = sorted(set(w) - set(g))[:3]
        extra = sorted(set(g) - set(w))[:3]
        changed = sorted(p for p in set(w) & set(g) if w[p] != g[p])[:3]
        if missing or extra or changed:
            out.append(f"{name}: missing {missing} extra {extra} changed {[(p, w[p], g[p]) for p in changed]}")
    return f"{key[0]} {key[1]}: " + "; ".join(out)


class Checker:
    """Compare, step by step, what replays produce with what the recorded feeds published."""

    def __init__(self) -> None:
        self.recorded = BusBooks()
        self.replayed = BusBooks()
        self.verdict = Verdict()

    def check(self, where: str, replay_msgs: list[FeedMsg], recorded_payloads: list[bytes]) -> None:
        v = self.verdict
        v.bus_messages += len(recorded_payloads)
        touched = set()
        packed = [encode(m) for m in replay_msgs]
        if packed != recorded_payloads:
            v.bus_mismatches += 1
            if v.first_mismatch is None:
                v.first_mismatch = (f"{where}: replay published {len(packed)} message(s), the recorded feed "
                                    f"{len(recorded_payloads)} (or different bytes)")
        for m in replay_msgs:
            touched.add(self.replayed.apply(m))
        for raw in recorded_payloads:
            touched.add(self.recorded.apply(decode(raw)))
        touched.discard(None)
        for key in touched:
            assert key is not None
            v.book_checks += 1
            want, got = self.recorded.get(key), self.replayed.get(key)
            if want != got:
                v.book_mismatches += 1
                if v.first_mismatch is None or v.first_mismatch.endswith("(or different bytes)"):
                    v.first_mismatch = f"{where}: book differs: {_diff(key, want, got)}"


def merged(runs: list[CaptureRun]) -> Iterator[tuple[int, list[Any]]]:
    """Every record of ``runs`` as ``(run index, record)``: each run in its own order, runs
    interleaved by wall-clock receive time (ties: run order). Deterministic."""
    def one(i: int, run: CaptureRun) -> Iterator[tuple[int, int, list[Any]]]:
        for rec in run.records():
            yield int(rec[2]), i, rec
    for _ts, i, rec in heapq.merge(*(one(i, r) for i, r in enumerate(runs)), key=lambda x: (x[0], x[1])):
        yield i, rec


def verify_runs(runs: list[CaptureRun], *, feeds: list[FeedReplay] | None = None,
                on_step: Any = None) -> Verdict:
    """Replay ``runs`` (each through its own FeedCore), interleaved as :func:`merged` orders
    them, and compare with the recorded bus after every input. ``on_step(run index, record,
    messages)`` sees each step's messages (the aggregator replay uses it)."""
    feeds = feeds if feeds is not None else [FeedReplay(r) for r in runs]
    checker = Checker()
    v = checker.verdict
    pending: dict[int, tuple[str, list[FeedMsg], list[bytes]]] = {}
    t0 = time.perf_counter()
    for i, rec in merged(runs):
        kind = rec[0]
        if kind == BUS:
            if i in pending:
                pending[i][2].extend(rec[3])
            else:        # output before any input of the run (cannot happen with a sane capture)
                checker.check(f"{runs[i].venue} before any input", [], list(rec[3]))
            continue
        if kind not in INPUTS:
            continue
        if i in pending:
            checker.check(*pending.pop(i))
        msgs = feeds[i].step(rec)
        v.inputs += 1
        if kind == WS:
            v.frames += 1
        if on_step is not None:
            on_step(i, rec, msgs)
        pending[i] = (f"{runs[i].venue} input {feeds[i].steps} ({kind})", msgs, [])
    for i, args in pending.items():
        if not runs[i].truncated:       # a file cut short may have lost the last step's bus record
            checker.check(*args)
    v.seconds = time.perf_counter() - t0
    v.truncated = any(r.truncated for r in runs)
    v.books = {k: (dict(b), dict(a)) for k, (b, a) in checker.replayed.books.items()}
    return v


def final_books(runs: Iterable[CaptureRun], *, before_stop: bool = True) -> dict[tuple[str, str], tuple[Side, Side]]:
    """Each (venue, symbol) book as the recorded bus left it (``before_stop``: just before the
    feed's stop emptied it), rebuilt from the ``bus`` records alone -- no replay."""
    out: dict[tuple[str, str], tuple[Side, Side]] = {}
    for run in runs:
        books = BusBooks()
        for rec in run.records():
            if rec[0] == STOP and before_stop:
                break
            if rec[0] == BUS:
                for raw in rec[3]:
                    books.apply(decode(raw))
        out.update(books.books)
    return out
