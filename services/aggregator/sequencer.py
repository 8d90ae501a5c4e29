"""Per-stream sequencing of the feed bus (pure: no sockets, no clock).

One :class:`Stream` per (venue, symbol) follows the ZeroMQ Guide's clone pattern: stream messages
must arrive with ``seq`` contiguous within one feed session (``sess``); a jump, a lost tail (seen
in a heartbeat) or a delta of an unknown session is a *gap*. On a gap the stream waits for a
snapshot reply (``awaiting``): stream messages arriving meanwhile are buffered, and when the reply
comes, those at or below its ``seq`` (same session) are dropped and the rest replayed in order.

The stream never does I/O: :meth:`Stream.offer` and :meth:`Stream.heartbeat` say what to do with a
message (apply, buffer, drop as a duplicate, or a gap and why), the caller sends the snapshot
request and applies the message to the book. Every method is O(1) except :meth:`Stream.replay`
(O(buffered)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.book import Book
from common.schema import SNAP, SYNCING, BookMsg, StatusMsg

#: Most stream messages kept while waiting for a snapshot; one more is a gap (a new request).
MAX_BUFFERED = 50_000

#: :meth:`Stream.offer` verdicts (the first item of its result).
APPLY = 0        # in sequence: apply it (:meth:`Stream.advance` then the book)
BUFFERED = 1     # kept until the snapshot reply (see :meth:`Stream.replay`)
DUPLICATE = 2    # at or below the last seq applied: drop (counted)
GAP = 3          # out of sequence: request a snapshot (the second item says why)
OVERFLOW = 4     # too much buffered: a gap as GAP, then buffer this message again

_APPLY = (APPLY, "")
_BUFFERED = (BUFFERED, "")
_DUPLICATE = (DUPLICATE, "")

StreamMsg = BookMsg | StatusMsg


@dataclass(slots=True)
class Stream:
    """What the aggregator knows of one (venue, symbol) feed stream: its sequencing state, its
    venue book and what the metrics read. ``link`` is the feed process carrying it (only its
    ``down`` and ``mode`` are read here and by the merged view)."""

    venue: str
    symbol: str
    link: Any
    book: Book = field(default_factory=Book)
    sess: int | None = None
    seq: int = 0
    status: str = SYNCING          # as the feed last said (a snap means live)
    reason: str = "waiting for the first snapshot"
    awaiting: bool = True          # a snapshot was requested; stream messages are buffered
    requested_at: float = 0.0
    buffer: list[StreamMsg] = field(default_factory=list)
    #: Per side (bids, asks): the deepest price the venue book is known exactly to (None: all).
    exact: tuple[Decimal | None, Decimal | None] = (None, None)
    ets: int = 0                   # exchange / receive time of the last book update applied
    rts: int = 0
    msgs: int = 0                  # stream messages applied (metrics read these two)
    levels: int = 0                # levels in the book messages applied

    def offer(self, msg: StreamMsg) -> tuple[int, str]:
        """What to do with a stream message off the bus: ``(APPLY | BUFFERED | DUPLICATE, "")``,
        ``(GAP, why)`` or ``(OVERFLOW, why)``. While ``awaiting`` the message is appended to the
        buffer (``BUFFERED``), unless :data:`MAX_BUFFERED` are kept already: then nothing changes
        and the caller handles a gap (:meth:`gap`, a new request) and buffers ``msg`` again.
        Otherwise as :meth:`check`."""
        if self.awaiting:
            if len(self.buffer) >= MAX_BUFFERED:
                return OVERFLOW, f"{len(self.buffer)} messages buffered while waiting for a snapshot"
            self.buffer.append(msg)
            return _BUFFERED
        return self.check(msg)

    def check(self, msg: StreamMsg) -> tuple[int, str]:
        """The sequence rule for a message of a synced stream: ``APPLY``, ``DUPLICATE`` or
        ``(GAP, why)``. A snapshot of a new session is applied (it resynchronises); any other
        message of a new session is a gap."""
        if msg.sess != self.sess:
            if isinstance(msg, BookMsg) and msg.kind != SNAP:
                return GAP, f"delta from feed session {msg.sess} without a snapshot"
            return _APPLY
        if msg.seq <= self.seq:
            return _DUPLICATE
        if msg.seq != self.seq + 1:
            return GAP, f"bus gap: expected seq {self.seq + 1}, got {msg.seq}"
        return _APPLY

    def heartbeat(self, sess: int, last: int) -> str | None:
        """A heartbeat said its feed's session and the last ``seq`` it published for this stream:
        the reason for a gap (another session, or messages lost at the tail), or None. A stream
        awaiting a snapshot ignores heartbeats."""
        if self.awaiting:
            return None
        if self.sess != sess:
            return f"feed session {sess} without a snapshot"
        if last > self.seq:
            return f"lost messages {self.seq + 1}..{last} (seen in heartbeat)"
        return None

    def request(self, now: float) -> None:
        """A snapshot was (or is about to be) requested at ``now``: buffer until it comes."""
        self.awaiting = True
        self.requested_at = now

    def gap(self) -> None:
        """A gap: what was buffered is worthless (the snapshot requested next covers it)."""
        self.buffer.clear()

    def advance(self, msg: StreamMsg) -> None:
        """``msg`` is applied: it is now the last of the stream."""
        self.sess = msg.sess
        self.seq = msg.seq
        self.msgs += 1

    def accept_reply(self) -> bool:
        """A snapshot reply arrived: True when it is wanted (the stream was awaiting one; it is
        no longer), False when it is to be dropped."""
        if not self.awaiting:
            return False
        self.awaiting = False
        return True

    def replay(self) -> list[StreamMsg]:
        """After the reply was applied (:meth:`advance`): the buffered messages still to offer,
        in arrival order (those of the reply's session at or below its seq dropped); the buffer
        is emptied. O(buffered)."""
        buffered, self.buffer = self.buffer, []
        sess, seq = self.sess, self.seq
        return [m for m in buffered if not (m.sess == sess and m.seq <= seq)]
