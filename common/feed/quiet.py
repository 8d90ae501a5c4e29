"""Quiet symbols (``quiet_after``, per venue or per symbol) for the feed core: a ``live`` book
that has not changed for its ``quiet_after`` while its connection stays up is taken out (``stale``)
and resynced, at most ``quiet_resyncs_per_min`` a minute per feed process so quiet symbols cannot
spend the venue's REST weight or message rate. Pure, like :mod:`common.feed.core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.feed.spec import REST, RESUBSCRIBE
from common.feed.stream import SymbolStream
from common.schema import STALE

if TYPE_CHECKING:
    from common.feed.core import FeedCore


class TokenBucket:
    """``capacity`` tokens, refilled at ``per_second``; full at the first call. Pure: the caller
    passes the (monotonic) time. O(1) per call."""

    def __init__(self, capacity: float, per_second: float) -> None:
        if capacity < 1 or per_second <= 0:
            raise ValueError(f"a token bucket needs capacity >= 1 and a rate > 0 (got {capacity}, {per_second})")
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.at: float | None = None

    def _refill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        if self.at is None or now > self.at:
            self.at = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.per_second)


class QuietWatch:
    """The quiet-symbol rule of one :class:`~common.feed.core.FeedCore`: symbols marked ``stale``
    for quiet wait in :attr:`queue`, oldest first, for the :attr:`budget`."""

    def __init__(self, core: FeedCore, per_min: float) -> None:
        self.core = core
        self.budget = TokenBucket(max(1.0, per_min), per_min / 60)
        self.queue: list[SymbolStream] = []

    def mark(self, st: SymbolStream, now: float, rts: int) -> None:
        """``st``'s live book has not changed for ``quiet_after`` s: void it (``stale``: its levels
        leave the merged book) and queue its resync."""
        idle = now - st.changed
        self.core.counters["quiet"] += 1
        self.core.log.warning("%s %s: book unchanged for %.1f s on a live connection (quiet_after %g s): stale, "
                         "resyncing", self.core.cfg.id, st.symbol, idle, st.quiet_after)
        st.void()
        self.core.out.discard(st)
        self.core.set_status(st, STALE, f"book unchanged for {idle:.1f} s (quiet_after {st.quiet_after:g} s); "
                                   "resyncing", rts)
        st.quiet_wait, st.quiet_held = True, False
        self.queue.append(st)

    def resyncs(self, now: float, rts: int) -> None:
        """Start the queued quiet resyncs the budget allows, oldest first. A symbol that left
        ``stale`` meanwhile (resynced for another reason, down) leaves the queue; on a REST venue
        one whose stream has still sent nothing keeps waiting without holding up the others."""
        waiting: list[SymbolStream] = []
        for st in self.queue:
            if not st.quiet_wait or st.status != STALE or not st.listed:
                st.quiet_wait = False
                continue
            if self.core.spec.snapshot == REST and st.seqr.buffered == 0:
                waiting.append(st)
                continue
            if self.core.ending or not self.budget.take(now):
                if not st.quiet_held and not self.core.ending:
                    st.quiet_held = True
                    self.core.counters["quiet_resyncs_held"] += 1
                    self.core.rlog.warning("quiet_budget", "%s %s: quiet resync waits for the budget "
                                      "(quiet_resyncs_per_min %g; next in %.1f s)", self.core.cfg.id, st.symbol,
                                      self.budget.per_second * 60, self.budget.wait(now))
                waiting.append(st)
                continue
            st.quiet_wait = False
            self.core.counters["quiet_resyncs"] += 1
            how = {REST: "REST snapshot", RESUBSCRIBE: "resubscribe"}.get(self.core.spec.resync, "reconnect")
            self.core.log.info("%s %s: quiet resync (%s)", self.core.cfg.id, st.symbol, how)
            # reset=False: on a REST venue the events buffered while stale prove the snapshot current.
            self.core.resync(st, f"quiet for {st.quiet_after:g} s: resync ({how})", rts, now=now, reset=False)
        self.queue = waiting

    def forget(self) -> None:
        """A connection starts or ends: every book is rebuilt anyway."""
        for st in self.queue:
            st.quiet_wait = st.quiet_held = False
        self.queue = []
