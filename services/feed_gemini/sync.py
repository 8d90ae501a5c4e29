"""Gemini's WebSocket API sync rule for one symbol, as a tiny state machine.

With ``?snapshot=-1`` on the URL, the first ``depthUpdate`` of a symbol after connecting is its
full book; every later one carries ids ``U``..``u`` that continue the previous event's ``u``:

1. After a reset (a new connection), the first event IS the book: Verdict.SNAPSHOT, the core
   REPLACES the book with its levels (never merges: a level the old book had and the new one
   lacks must not survive a reconnect). ``id := u``.
2. Then for every event: ``u <= id`` -> DROP (stale or duplicate: already in the book);
   ``U == id + 1`` -> APPLY, ``id := u``; anything else (``U > id + 1``: updates were missed;
   ``U <= id < u``: an overlap the venue never documents) -> GAP.
3. After a GAP the book is void until the next reset: every event is DROPped, because the initial
   book only comes with a new connection (resync = RECONNECT) and the next event on the old
   connection is a diff, not a book. The core must call :meth:`reset` for every symbol of a
   connection when a new connection opens, before its first frame.

Unlike Binance nothing is buffered: there is no REST snapshot to wait for.
"""

from __future__ import annotations

import enum

from common.feed.types import DepthEvent, Snapshot, Verdict


class _State(enum.Enum):
    WAIT_BOOK = "wait_book"  # after a reset: the next event is the full book
    LIVE = "live"            # book at ``book_id``
    VOID = "void"            # after a gap: nothing applies until a reset (a new connection)


class GeminiSequencer:
    """SNAPSHOT / APPLY / DROP / GAP decisions for one symbol. Every method is O(1)."""

    def __init__(self) -> None:
        self._state = _State.WAIT_BOOK
        self.book_id: int | None = None

    @property
    def buffered(self) -> int:
        return 0

    @property
    def position(self) -> int | None:
        return self.book_id

    @property
    def waiting_for_book(self) -> bool:
        """True between a reset and the initial book (the snapshot timeout runs)."""
        return self._state is _State.WAIT_BOOK

    def reset(self) -> None:
        """A new connection: its first event for this symbol will be the full book."""
        self._state = _State.WAIT_BOOK
        self.book_id = None

    def on_event(self, ev: DepthEvent) -> Verdict:
        """SNAPSHOT for the first event after a reset; then APPLY, DROP or GAP (see the module
        docstring); DROP for everything after a GAP until :meth:`reset`."""
        if self._state is _State.WAIT_BOOK:
            self._state = _State.LIVE
            self.book_id = ev.last
            return Verdict.SNAPSHOT
        if self._state is _State.VOID:
            return Verdict.DROP
        assert self.book_id is not None
        if ev.last <= self.book_id:
            return Verdict.DROP
        if ev.first != self.book_id + 1:
            self._state = _State.VOID
            self.book_id = None
            return Verdict.GAP
        self.book_id = ev.last
        return Verdict.APPLY

    def on_snapshot(self, snap: Snapshot) -> tuple[Verdict, list[DepthEvent]]:
        """A whole book from elsewhere (this API sends none apart from the first event; kept for
        the Sequencer protocol): SYNCED at ``snap.last``, nothing buffered to apply."""
        self._state = _State.LIVE
        self.book_id = snap.last
        return Verdict.SYNCED, []
