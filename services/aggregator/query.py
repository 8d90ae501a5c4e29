"""The aggregator's depletion query endpoint: request frames in, reply frames out (no sockets here).

The aggregator owns the ROUTER socket (``aggregator.query``) and, in its event loop, does::

    frames = sock.recv_multipart()
    sock.send_multipart(query_service.handle(frames))

Because the loop is single-threaded, every reply is computed against the books exactly as they
were when the snapshot named by the reply's ``epoch``/``seq`` was published: nothing changes
between reading the position and walking the books. Frame layout and wire shapes:
:mod:`common.query`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, Protocol

from common.query import QueryError, Request, encode_error, encode_reply, parse_request, split_envelope
from services.aggregator.depletion import Depletion, book_side, deplete, depth_note
from services.aggregator.merge import merge_levels

log = logging.getLogger("aggregator.query")


class BookSource(Protocol):
    """What the query service needs from the aggregator (which implements it)."""

    def position(self, symbol: str) -> tuple[int, int] | None:
        """``(epoch, seq)`` of the last published snapshot of ``symbol``, None if none yet."""
        ...

    def symbols(self) -> list[str]:
        """Every symbol the aggregator carries."""
        ...

    def statuses(self, symbol: str) -> dict[str, str]:
        """venue -> live/syncing/stale/down for ``symbol``."""
        ...

    def merged_side(self, symbol: str, side: int) -> Iterator[tuple[Decimal, Decimal, str]]:
        """The merged side (``common.book.BID``/``ASK``) best first, as subscribers see it: dust
        out, only live venues."""
        ...

    def venue_side(self, symbol: str, venue: str, side: int) -> Iterator[tuple[Decimal, Decimal]] | None:
        """That venue's full book side best first, None if the venue does not carry ``symbol``."""
        ...

    def exact_to(self, symbol: str, side: int, venue: str | None = None) -> Decimal | None:
        """The deepest price of ``side`` known exactly (one venue's, or merged); None: all of it."""

    def fees(self) -> dict[str, Decimal]:
        """venue -> taker fee rate (from config)."""
        ...


class QueryService:
    """Answers depletion requests from a :class:`BookSource`. :meth:`handle` never raises.

    Counters: ``requests`` (every call), ``errors`` (error replies for bad requests, unknown
    symbols or venues) and ``failures`` (unexpected exceptions, logged with a traceback and
    answered with an error reply).
    """

    def __init__(self, source: BookSource) -> None:
        self.source = source
        self.requests = 0
        self.errors = 0
        self.failures = 0

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors, "failures": self.failures}

    def handle(self, frames: Sequence[bytes]) -> list[bytes]:
        """ROUTER frames of one request -> the reply frames (same envelope). Cost: the walks,
        O(k log V) for k levels consumed over V venues, per book walked."""
        self.requests += 1
        envelope: list[bytes] = []
        try:
            envelope, body = split_envelope(frames)
            if body is None:
                raise QueryError(f"expected one request frame after the envelope, got "
                                 f"{max(len(frames) - len(envelope), 0)}")
            return [*envelope, self.answer(parse_request(body))]
        except QueryError as e:
            self.errors += 1
            log.debug("bad query: %s", e)
            return [*envelope, encode_error(str(e))]
        except Exception:
            self.failures += 1
            log.exception("depletion query failed")
            return [*envelope, encode_error("internal error in the aggregator (logged); try again")]

    def answer(self, req: Request) -> bytes:
        """A validated request -> reply frame; :class:`QueryError` for an unknown symbol or venue
        or a symbol with no published snapshot yet."""
        src = self.source
        known = src.symbols()
        if req.symbol not in known:
            raise QueryError(f"unknown symbol {req.symbol!r}; known: {sorted(known)}")
        pos = src.position(req.symbol)
        if pos is None:
            raise QueryError(f"no snapshot of {req.symbol} published yet (venues syncing); try again")
        statuses = src.statuses(req.symbol)
        side = book_side(req.side)
        rates = src.fees()
        fees = rates if any(rates.values()) else None

        def walk(levels: Any) -> Depletion:
            return deplete(levels, req.side, quantity=req.quantity, notional=req.notional, fees=fees)

        def noted(d: Depletion, venue: str | None) -> dict[str, Any]:
            return {**d.to_wire(), **depth_note(req.side, d, src.exact_to(req.symbol, side, venue))}

        merged: dict[str, Any] | None = None
        venues: dict[str, dict[str, Any]] = {}
        if req.venue is not None:
            levels = src.venue_side(req.symbol, req.venue, side)
            if levels is None:
                raise QueryError(f"venue {req.venue!r} does not carry {req.symbol}; "
                                 f"venues: {sorted(statuses)}")
            venues[req.venue] = noted(walk(merge_levels({req.venue: levels}, side)), req.venue)
        else:
            merged = noted(walk(src.merged_side(req.symbol, side)), None)
            if req.all_venues:
                for venue in statuses:
                    levels = src.venue_side(req.symbol, venue, side)
                    if levels is not None:
                        venues[venue] = noted(walk(merge_levels({venue: levels}, side)), venue)
        epoch, seq = pos
        return encode_reply(epoch=epoch, seq=seq, symbol=req.symbol, merged=merged, venues=venues,
                            statuses=statuses)
