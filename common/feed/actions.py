"""What the feed core asks its transport to do (see :mod:`common.feed.core`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Send:
    """Send these text frames on the current connection."""

    frames: list[str]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch ``symbol``'s REST snapshot after ``delay`` s and hand the answer to
    :meth:`~common.feed.core.FeedCore.snapshot_body` (or ``snapshot_failed``)."""

    symbol: str
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Reconnect:
    """End the connection: its symbols get ``status``; ``immediate`` skips the backoff delay."""

    status: str
    reason: str
    immediate: bool = False


Action = Send | Fetch | Reconnect
