"""Binance's documented local-book procedure for one symbol, as a tiny state machine.

Rules (Binance spot "How to manage a local order book correctly", wording of 2025-11-12):

1. Buffer diff events from the stream; note ``U`` of the first.
2. Fetch a snapshot. If ``lastUpdateId < U_first`` it is too old: fetch again (buffer kept).
3. Drop buffered events with ``u <= lastUpdateId``. The first kept event straddles the snapshot:
   ``U <= lastUpdateId + 1 <= u`` (not ``U == lastUpdateId + 1``: that rejects valid syncs).
4. Then for every event, with ``id`` the last applied ``u``: ``u <= id`` -> drop (stale or
   duplicate: already in the book); ``U > id + 1`` -> gap (updates were missed); else apply and
   ``id := u``. ``u - U + 1`` counts engine updates, not levels: it is never checked.

A snapshot taken while the buffer is still empty is refused (fetch again): nothing proves it is
not an old answer (REST can lag the stream), and publishing it as ``live`` until the next event
revealed the gap would show a wrong book; in a quiet market that could last long. The symbol
stays ``syncing`` until its first event is buffered.
"""

from __future__ import annotations

from collections import deque

from common.feed.types import DepthEvent, Snapshot, Verdict

MAX_BUFFER = 100_000


class BinanceSequencer:
    """Apply / drop / gap decisions for one symbol. Every method is O(1) except
    :meth:`on_snapshot`, O(buffered)."""

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        # Oldest events fall off a full buffer; that is safe: they would be before a newer
        # snapshot anyway, and U_first moves with them.
        self._buf: deque[DepthEvent] = deque(maxlen=max_buffer)
        self.book_id: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def position(self) -> int | None:
        return self.book_id

    def reset(self) -> None:
        """Back to buffering with an empty buffer."""
        self._buf.clear()
        self.book_id = None

    def _step(self, ev: DepthEvent) -> Verdict:
        assert self.book_id is not None
        if ev.last <= self.book_id:
            return Verdict.DROP
        if ev.first > self.book_id + 1:
            return Verdict.GAP
        self.book_id = ev.last
        return Verdict.APPLY

    def on_event(self, ev: DepthEvent) -> Verdict:
        """BUFFERED while there is no snapshot; then APPLY, DROP, or GAP. On GAP the book is void
        and this event starts a new buffer (it is the first one after the missed updates)."""
        if self.book_id is None:
            self._buf.append(ev)
            return Verdict.BUFFERED
        v = self._step(ev)
        if v is Verdict.GAP:
            self.reset()
            self._buf.append(ev)
        return v

    def on_snapshot(self, snap: Snapshot) -> tuple[Verdict, list[DepthEvent]]:
        """``(SYNCED, events to apply on top of the snapshot)``; ``(REFETCH, [])`` when nothing is
        buffered yet or the snapshot is older than the first buffered event (buffer kept); ``(GAP, [])`` when the
        buffer itself misses updates after the snapshot (the events from the hole on are kept as
        the new buffer)."""
        if not self._buf or snap.last < self._buf[0].first:
            return Verdict.REFETCH, []
        self.book_id = snap.last
        events = list(self._buf)
        self._buf.clear()
        out: list[DepthEvent] = []
        for i, ev in enumerate(events):
            v = self._step(ev)
            if v is Verdict.GAP:
                self.reset()
                self._buf.extend(events[i:])
                return Verdict.GAP, []
            if v is Verdict.APPLY:
                out.append(ev)
        return Verdict.SYNCED, out
