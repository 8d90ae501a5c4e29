"""Sync rules that several venues share (each venue's own rule lives in its ``sync.py``).

:class:`StreamSequencer` is the rule of a venue that sends each symbol's whole book in-band after a
subscribe and numbers nothing (Kraken, Coinbase Exchange, Gemini market data v2): the snapshot
makes the book, every later update applies. An update that arrives before the snapshot belongs to
an older subscription of the symbol and is dropped. Integrity, where the venue offers any, comes
from elsewhere (Kraken's checksum, Coinbase's per-connection ``sequence_num``, the crossed-book and
silence checks).
"""

from __future__ import annotations

from common.feed.types import DepthEvent, Snapshot, Verdict


class StreamSequencer:
    """Apply everything after the in-band snapshot; drop updates before it. O(1) per call."""

    def __init__(self) -> None:
        self.synced = False
        self.count = 0  # updates applied since the snapshot, for logs

    @property
    def buffered(self) -> int:
        return 0

    @property
    def position(self) -> int | None:
        return self.count if self.synced else None

    def reset(self) -> None:
        """Wait for a new snapshot."""
        self.synced = False
        self.count = 0

    def on_event(self, ev: DepthEvent) -> Verdict:
        """DROP before the snapshot, APPLY after it."""
        if not self.synced:
            return Verdict.DROP
        self.count += 1
        return Verdict.APPLY

    def on_snapshot(self, snap: Snapshot) -> tuple[Verdict, list[DepthEvent]]:
        """Always SYNCED, with nothing to apply on top: the snapshot replaces the book."""
        self.synced = True
        self.count = 0
        return Verdict.SYNCED, []
