"""Venue-neutral values that pure venue parsers return and the feed runner consumes.

A venue's ``parse.py`` turns raw text into one of these (or raises :class:`ParseError`); its
sequencer decides, from these alone, whether an event is applied, dropped, buffered or reveals a
gap. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

Levels = list[tuple[Decimal, Decimal]]


class ParseError(ValueError):
    """A frame or REST body that does not parse. ``key`` is the venue's own symbol when the text
    was recognisably a book update for that symbol (the runner then resyncs that symbol, because
    the bad frame may have carried an update the book now misses); otherwise ``None``."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message[:200])
        self.key = key


@dataclass(slots=True)
class DepthEvent:
    """One book update for one symbol, in venue order.

    ``first``/``last`` are the venue's ordering ids: Binance ``U``/``u``; Bitstamp has only the
    ``microtimestamp``, so both hold it. Quantities are absolute; zero removes the level. Treated
    as immutable, but not ``frozen``: one is built per frame, and a frozen dataclass pays an
    ``object.__setattr__`` per field (~3x the construction cost here).
    """

    key: str
    first: int
    last: int
    ets: int
    bids: Levels = field(default_factory=list)
    asks: Levels = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A full-depth REST book: ``last`` is the id it is consistent with (Binance ``lastUpdateId``,
    Bitstamp ``microtimestamp``); ``ets`` its exchange time in ns, 0 when the venue gives none."""

    key: str
    last: int
    ets: int
    bids: Levels
    asks: Levels


class ControlKind(enum.Enum):
    ACK = "ack"                # subscription confirmed
    HEARTBEAT = "heartbeat"    # an application-level keep-alive reply
    RECONNECT = "reconnect"    # the venue asks us to reconnect (maintenance, shutdown)
    ERROR = "error"            # the venue reports an error on this connection
    IGNORE = "ignore"          # a valid frame we do not use (trades, tickers)


@dataclass(frozen=True, slots=True)
class Control:
    """A non-book frame. Every received frame counts as liveness, whatever its kind."""

    kind: ControlKind
    detail: str = ""


Frame = DepthEvent | Control


@dataclass(frozen=True, slots=True)
class PairInfo:
    """One venue instrument from its pair list: canonical ``BASE/QUOTE``, the venue's own symbol
    (``key``, as used in REST paths and in parsed events) and whether it trades now."""

    symbol: str
    key: str
    trading: bool
    status: str = ""


class Verdict(enum.Enum):
    """What a sequencer says about an event or a snapshot."""

    BUFFERED = "buffered"  # no snapshot yet: kept for later
    APPLY = "apply"        # apply to the book and publish as a delta
    DROP = "drop"          # already contained in the book (stale or duplicate)
    GAP = "gap"            # updates were missed: the book is void, resync (the event is re-buffered)
    REFETCH = "refetch"    # the snapshot is older than the buffered stream: fetch another one
    SYNCED = "synced"      # the snapshot is good: load it, then apply the returned events
