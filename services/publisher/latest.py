"""The latest endpoint's core: the newest merged book per symbol, on request (no sockets, no clock).

Protocol (frames and messages: :mod:`common.schema`, "Latest endpoint"): a client asks for the
symbols it wants and says which ``(epoch, seq)`` it already holds; the answer carries the newest
book of every wanted symbol that is newer, at once if there is one, else as soon as one is
published, else empty after the request's ``wait``. One answer per request is the client's whole
credit: nothing is ever queued for a client that does not ask, so a client that stalls and asks
again reads the book of *now*, and every snapshot published meanwhile is skipped (conflated).

Memory: one book per symbol for all clients together (the bytes the SUB path sends, shared), and
per client only the request it holds, if any (its symbols and ``have``, at most
``LATEST_MAX_SYMBOLS`` each). A client holds nothing between an answer and its next request; a
held request is dropped when it is answered, replaced, or its ``wait`` runs out, so a client that
disconnects leaves at most one held request behind, until the next book of one of its symbols
or its ``wait`` (the I/O side then counts it ``gone`` when ZeroMQ says the peer left). At most
``max_waiting`` requests are held at once; a further one is refused with an error answer.

Cost: a published book is O(1) plus O(clients waiting for that symbol); a request is O(symbols
it names) (O(symbols held) when it names none).

The I/O side (:class:`services.publisher.service.Publisher`) feeds it ROUTER messages, books and
the time, and sends what it returns (each message starts with the client's envelope, see
:meth:`LatestBooks.on_message`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common import schema
from common.schema import BusError, LatestRequest, StatsRequest

#: A message to send on the ROUTER: the client's envelope frames, then the answer frames.
Out = list[bytes]


@dataclass(slots=True)
class _Held:
    """One client's held request."""

    envelope: tuple[bytes, ...]
    id: int
    symbols: tuple[str, ...]           # () = every symbol
    have: dict[str, tuple[int, int]]
    deadline: float


def _newer(book: tuple[int, int, bytes, bytes], have: tuple[int, int] | None) -> bool:
    return have is None or book[0] != have[0] or book[1] > have[1]


class LatestBooks:
    """The newest book per symbol and the requests held for clients (see the module docstring)."""

    def __init__(self, *, max_waiting: int = 10_000) -> None:
        self.max_waiting = max_waiting
        #: symbol -> (epoch, seq, topic frame, payload frame) of the newest book published.
        self.books: dict[str, tuple[int, int, bytes, bytes]] = {}
        #: client identity (the envelope's first frame) -> its held request.
        self.held: dict[bytes, _Held] = {}
        self._by_symbol: dict[str, set[bytes]] = {}   # symbol -> identities holding a request for it
        self._any: set[bytes] = set()                 # identities holding a request for every symbol
        self.counters: dict[str, int] = {}
        #: Extra counters reported by ``stats`` (the publisher's own).
        self.extra: Mapping[str, int] = {}

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # --- held requests ---------------------------------------------------------------------

    def _hold(self, ident: bytes, h: _Held) -> None:
        self.held[ident] = h
        if not h.symbols:
            self._any.add(ident)
        for s in h.symbols:
            self._by_symbol.setdefault(s, set()).add(ident)

    def _release(self, ident: bytes) -> _Held | None:
        h = self.held.pop(ident, None)
        if h is None:
            return None
        if not h.symbols:
            self._any.discard(ident)
        for s in h.symbols:
            waiters = self._by_symbol.get(s)
            if waiters is not None:
                waiters.discard(ident)
                if not waiters:
                    del self._by_symbol[s]
        return h

    def _answer(self, envelope: Iterable[bytes], req_id: int, symbols: tuple[str, ...],
                have: Mapping[str, tuple[int, int]]) -> Out:
        frames: list[bytes] = []
        for s in symbols or self.books:
            b = self.books.get(s)
            if b is not None and _newer(b, have.get(s)):
                frames += (b[2], b[3])
        self._count("answers")
        self._count("books_sent", len(frames) // 2)
        return [*envelope, schema.encode_books_header(req_id, len(frames) // 2), *frames]

    # --- inputs ----------------------------------------------------------------------------

    def on_book(self, symbol: str, epoch: int, seq: int, topic: bytes, payload: bytes) -> list[Out]:
        """A book was published: keep it as the symbol's newest and answer every request held
        for this symbol (each answer also carries any other wanted symbol newer than its
        ``have``). Returns the messages to send."""
        book = (epoch, seq, topic, payload)
        self.books[symbol] = book
        waiters = self._by_symbol.get(symbol)
        if not waiters and not self._any:
            return []
        out: list[Out] = []
        for ident in [*(waiters or ()), *self._any]:
            h = self.held.get(ident)
            if h is None or not _newer(book, h.have.get(symbol)):
                continue
            self._release(ident)
            out.append(self._answer(h.envelope, h.id, h.symbols, h.have))
        return out

    def on_message(self, frames: list[bytes], now: float) -> Out | None:
        """One ROUTER message ``[identity, (envelope...,) request]`` -> the answer to send now,
        or None (the request is held). A malformed request is answered with an error."""
        if len(frames) < 2:
            self._count("malformed")
            return None
        envelope, raw = tuple(bytes(f) for f in frames[:-1]), bytes(frames[-1])
        ident = envelope[0]
        try:
            req = schema.decode_latest_request(raw)
        except BusError as e:
            self._count("malformed")
            try:
                rid = schema.request_id(schema.unpack(raw))
            except BusError:
                rid = 0
            return [*envelope, schema.encode_latest_error(rid, str(e))]
        if isinstance(req, StatsRequest):
            self._count("stats_requests")
            books = {s: (b[0], b[1]) for s, b in self.books.items()}
            return [*envelope, schema.encode_stats(req.id, len(self.held), books,
                                                   {**self.extra, **{f"latest_{k}": v
                                                                     for k, v in self.counters.items()}})]
        return self._on_latest(ident, envelope, req, now)

    def _on_latest(self, ident: bytes, envelope: tuple[bytes, ...], req: LatestRequest, now: float) -> Out | None:
        self._count("requests")
        if self._release(ident) is not None:
            self._count("replaced")
        wanted = req.symbols or tuple(self.books)
        if req.wait <= 0 or any(s in self.books and _newer(self.books[s], req.have.get(s)) for s in wanted):
            return self._answer(envelope, req.id, req.symbols, req.have)
        if len(self.held) >= self.max_waiting:
            self._count("refused")
            return [*envelope, schema.encode_latest_error(
                req.id, f"the publisher already holds {self.max_waiting} requests; ask again later")]
        self._hold(ident, _Held(envelope, req.id, req.symbols, req.have,
                                now + min(req.wait, schema.LATEST_MAX_WAIT)))
        self._count("held")
        return None

    def expire(self, now: float) -> list[Out]:
        """Answer (with no books) every held request whose ``wait`` has run out. O(held)."""
        due = [ident for ident, h in self.held.items() if h.deadline <= now]
        out: list[Out] = []
        for ident in due:
            h = self._release(ident)
            if h is not None:
                self._count("expired")
                out.append([*h.envelope, schema.encode_books_header(h.id, 0)])
        return out

    def gone(self, ident: bytes) -> None:
        """The client behind ``ident`` is gone (ZeroMQ could not route its answer): forget it."""
        self._count("gone")
        self._release(ident)

    def check(self) -> None:
        """Assert the invariants: the symbol index holds exactly the held requests."""
        index: dict[str, set[bytes]] = {}
        for ident, h in self.held.items():
            assert h.envelope[0] == ident
            for s in h.symbols:
                index.setdefault(s, set()).add(ident)
        assert index == self._by_symbol, (index, self._by_symbol)
        assert self._any == {i for i, h in self.held.items() if not h.symbols}
