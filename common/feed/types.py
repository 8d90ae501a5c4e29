"""Venue-neutral values that pure venue parsers return and the feed runner consumes.

A venue's ``parse.py`` turns raw text into one of these (or raises :class:`ParseError`); its
sequencer decides, from these alone, whether an event is applied, dropped, buffered or reveals a
gap. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

Levels = list[tuple[Decimal, Decimal]]


class ParseError(ValueError):
    """A frame or REST body that does not parse. ``key`` is the venue's own symbol when the text
    was recognisably a book update for that symbol (the runner then resyncs that symbol, because
    the bad frame may have carried an update the book now misses); otherwise ``None``.
    ``frames``: what the frame still carried that did parse (a Coinbase message with a bad event
    of one product among good ones, ConnSeq first); the core handles those as usual."""

    def __init__(self, message: str, key: str | None = None, frames: Sequence[Frame] = ()) -> None:
        super().__init__(message[:200])
        self.key = key
        self.frames: list[Frame] = list(frames)


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
    #: The venue's integrity check of the book right after this event (Kraken's CRC32), or None.
    checksum: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole book, from REST or in-band on the stream: ``last`` is the id it is consistent with
    (Binance ``lastUpdateId``, Bitstamp ``microtimestamp``; 0 for venues without ids); ``ets``
    its exchange time in ns, 0 when the venue gives none; ``checksum`` the venue's integrity check
    of it (Kraken), or None. Levels keep the wire's exponent (``Decimal("0.10000000")``), so
    ``format(d, "f")`` gives back the venue's digits."""

    key: str
    last: int
    ets: int
    bids: Levels
    asks: Levels
    checksum: int | None = None


class ControlKind(enum.Enum):
    ACK = "ack"                # subscription confirmed (``key`` set when it names one symbol)
    HEARTBEAT = "heartbeat"    # an application-level keep-alive reply
    RECONNECT = "reconnect"    # the venue asks us to reconnect (maintenance, shutdown)
    ERROR = "error"            # the venue reports an error on this connection
    IGNORE = "ignore"          # a valid frame we do not use (trades, tickers)
    MODE = "mode"              # the venue's system status: ``detail`` is "online", "maintenance",
                               # "cancel_only", "post_only" (Kraken) ...
    INSTRUMENT = "instrument"  # ``key``'s wire precision: ``value`` is (price decimals, qty decimals)
    SYMBOL_ERROR = "symbol_error"  # the venue refused ``key`` (e.g. "Currency pair not supported")


@dataclass(frozen=True, slots=True)
class Control:
    """A non-book frame. Every received frame counts as liveness, whatever its kind. ``key`` is
    the venue's own symbol when the control concerns one; ``value`` carries data for MODE and
    INSTRUMENT."""

    kind: ControlKind
    detail: str = ""
    key: str | None = None
    value: object = None


@dataclass(frozen=True, slots=True)
class ConnSeq:
    """A connection-level sequence number (Coinbase Advanced Trade ``sequence_num``): +1 for every
    message on the connection, whatever its channel. A parser puts it first in what it returns."""

    n: int


#: What ``parse_frame`` returns: one item, or a list of them when a frame carries several (a
#: Coinbase message with several events, a ConnSeq before the events).
Frame = DepthEvent | Snapshot | Control | ConnSeq


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
    SNAPSHOT = "snapshot"  # this event IS the venue's initial book (Gemini's first depthUpdate):
                           # replace the book with its levels
