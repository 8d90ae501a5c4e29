"""Bitstamp's sync rule for one symbol, on the integer ``microtimestamp`` (µs).

1. Buffer diffs from the stream.
2. Fetch the REST book. If its microtimestamp is older than the first buffered diff's, diffs
   published between the two were never seen: fetch again, keeping the buffer. With nothing
   buffered yet there is no way to tell a current snapshot from one that lags the stream (REST
   answers can be seconds old, and Bitstamp has no sequence to reveal what was missed), so the
   snapshot is refused until the first diff has arrived; the symbol stays ``syncing`` meanwhile.
3. Drop every diff with ``mt <= snapshot mt``. EQUAL is dropped on purpose: the snapshot was cut
   at that microsecond, so it already contains that diff (re-applying an absolute size would be
   harmless for that level, but a later diff inside the snapshot may have changed it since).
4. Apply the rest, then live diffs, in arrival order.

There is no sequence number, so a lost diff cannot be seen here: the runner resyncs on
reconnect, on ``bts:request_reconnect``, on silence and on a crossed book.
"""

from __future__ import annotations

from collections import deque

from common.feed.types import DepthEvent, Snapshot, Verdict

MAX_BUFFER = 100_000


class BitstampSequencer:
    """Apply / drop decisions for one symbol (never GAP: nothing to detect one with)."""

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        self._buf: deque[DepthEvent] = deque(maxlen=max_buffer)
        self.snapshot_mt: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def position(self) -> int | None:
        return self.snapshot_mt

    def reset(self) -> None:
        self._buf.clear()
        self.snapshot_mt = None

    def on_event(self, ev: DepthEvent) -> Verdict:
        """BUFFERED without a snapshot; then DROP when ``mt <= snapshot mt``, else APPLY."""
        if self.snapshot_mt is None:
            self._buf.append(ev)
            return Verdict.BUFFERED
        return Verdict.DROP if ev.last <= self.snapshot_mt else Verdict.APPLY

    def on_snapshot(self, snap: Snapshot) -> tuple[Verdict, list[DepthEvent]]:
        """``(REFETCH, [])`` when nothing is buffered yet or ``snapshot mt < first buffered mt``
        (buffer kept); else ``(SYNCED, buffered diffs newer than the snapshot)``."""
        if not self._buf or snap.last < self._buf[0].first:
            return Verdict.REFETCH, []
        self.snapshot_mt = snap.last
        out = [ev for ev in self._buf if ev.last > snap.last]
        self._buf.clear()
        return Verdict.SYNCED, out
