"""One symbol of a feed: its sequencer, its book and what the bus has been told about it. Pure:
no I/O, no clock (times come in as arguments).

:meth:`SymbolStream.apply` is the whole per-message book step every venue shares: apply the
levels, cut each side to the venue's depth (publishing the levels that fall out as deletions),
then the integrity checks (crossed book, the venue's checksum). It answers with what went wrong,
if anything, and leaves resync decisions to :class:`~common.feed.core.FeedCore`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from common.book import Book
from common.feed.spec import Sequencer
from common.feed.types import Levels
from common.schema import SYNCING

Checksum = Callable[[Book, "tuple[int, int] | None"], int]


@dataclass
class SymbolStream:
    """State of one (venue, symbol) stream. ``seq`` numbers every bus message of the stream;
    ``exact_to`` holds, per side (bids, asks), the deepest price down to which the book is known to
    be exact (None: the whole side is known)."""

    symbol: str
    key: str
    seqr: Sequencer
    book: Book = field(default_factory=Book)
    seq: int = 0
    status: str = SYNCING
    reason: str = "starting"
    listed: bool = True
    refused: bool = False            # the venue refused the subscription (until reconnect)
    ets: int = 0
    rts: int = 0
    precision: tuple[int, int] | None = None
    exact_to: tuple[Decimal | None, Decimal | None] = (None, None)
    #: REST snapshot fetch in flight or scheduled (REST venues), and its retry delays.
    fetching: bool = False
    delays: object = None
    #: monotonic time the current (re)subscription started (STREAM venues), None when synced.
    awaiting_since: float | None = None
    #: resubscriptions since the book was last whole, and when the next one is due (backoff).
    resubs: int = 0
    resub_at: float | None = None
    #: monotonic time the book last changed: an update applied or a whole book loaded and
    #: published (set by the core, O(1) per message). A live book unchanged for ``quiet_after`` s
    #: (None: never checked) is taken for a stream that went silent inside a live connection.
    changed: float = 0.0
    quiet_after: float | None = None
    #: marked ``stale`` for quiet and waiting for its resync (the venue's quiet-resync budget; REST
    #: venues also wait for the first buffered event); ``quiet_held``: that wait was for budget.
    quiet_wait: bool = False
    quiet_held: bool = False

    def void(self) -> None:
        """Forget the book and the sequencer's state (a resync starts)."""
        self.seqr.reset()
        self.book.clear()
        self.exact_to = (None, None)

    def load(self, bids: Levels, asks: Levels, depth: int | None) -> None:
        """Replace the book by a whole one (REST or in-band snapshot, or Gemini's first event):
        never merged into the old one, so no level of an earlier book survives."""
        self.book.load(bids, asks)
        self.exact_to = self._exact(depth)

    def _exact(self, depth: int | None) -> tuple[Decimal | None, Decimal | None]:
        """A side holding ``depth`` levels (the most the venue gives) is known down to its last."""
        if depth is None:
            return None, None
        b, a = self.book.bids, self.book.asks
        return (b.peekitem(0)[0] if len(b) >= depth else None,
                a.peekitem(-1)[0] if len(a) >= depth else None)

    def truncate(self, depth: int, bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal]) -> int:
        """Cut each side to its best ``depth`` levels, recording each removed level in ``bids`` /
        ``asks`` as a deletion (quantity 0), and set ``exact_to``; returns how many were cut.
        O(k log n) for k removed levels."""
        cut = 0
        b, a = self.book.bids, self.book.asks
        while len(b) > depth:
            p, _ = b.popitem(0)
            bids[p] = Decimal(0)
            cut += 1
        while len(a) > depth:
            p, _ = a.popitem(-1)
            asks[p] = Decimal(0)
            cut += 1
        self.exact_to = self._exact(depth)
        return cut

    def verify(self, checksum: Checksum | None, expected: int | None) -> int | None:
        """None when the venue's checksum of the book matches ``expected`` (or there is nothing to
        check); else the checksum computed here."""
        if checksum is None or expected is None:
            return None
        got = checksum(self.book, self.precision)
        return None if got == expected else got
