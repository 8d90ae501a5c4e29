"""Pure conversions from a merged book to the gateway's protobuf messages (no I/O, no state).

:func:`summary` is the one place in bookmux where a price or an amount becomes a float: the
original challenge's ``Summary`` carries IEEE doubles, so ``float(Decimal)`` (correctly rounded to
the nearest double) happens here, at the very edge, and nowhere upstream. :func:`exact_book`
keeps every number as the canonical decimal text of the subscriber contract.

The input is any object with the subscriber contract's fields (``symbol, epoch, seq, ts, spread,
bids, asks, venues`` and optionally ``depletion``, ``venue_ts``), levels having ``price``,
``amount`` (``Decimal``) and ``venue``. Levels arrive best first, at equal price the larger amount
first (the contract's order, which is the original's); both conversions keep that order and cut
to the first ``levels`` of each side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import ModuleType
from typing import Any, Protocol

from common.numbers import fmt


class LevelLike(Protocol):
    @property
    def price(self) -> Decimal: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def venue(self) -> str: ...


class BookLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> int: ...
    @property
    def spread(self) -> Decimal | None: ...
    @property
    def bids(self) -> Sequence[LevelLike]: ...
    @property
    def asks(self) -> Sequence[LevelLike]: ...
    @property
    def venues(self) -> Mapping[str, str]: ...


def summary(pb: ModuleType, book: BookLike, levels: int) -> Any:
    """``orderbook.Summary`` of the top ``levels`` per side. An empty side is an empty list and
    then ``spread`` is 0; otherwise ``spread`` is best ask - best bid (negative when crossed)."""
    bids, asks = book.bids[:levels], book.asks[:levels]
    spread = 0.0
    if bids and asks:
        spread = float(book.spread if book.spread is not None else asks[0].price - bids[0].price)
    return pb.Summary(
        spread=spread,
        bids=[pb.Level(exchange=lv.venue, price=float(lv.price), amount=float(lv.amount)) for lv in bids],
        asks=[pb.Level(exchange=lv.venue, price=float(lv.price), amount=float(lv.amount)) for lv in asks])


def _text(v: Any) -> str:
    return fmt(v) if isinstance(v, Decimal) else str(v)


def _fills(pb: ModuleType, side: Any) -> list[Any]:
    out: list[Any] = []
    if not isinstance(side, Mapping):
        return out
    for size, d in side.items():
        if not isinstance(d, Mapping):
            continue
        f = pb.Fill(size=_text(size), filled=_text(d.get("filled", "0")), levels=int(d.get("levels") or 0),
                    partial=bool(d.get("partial")))
        for key in ("vwap", "worst", "slippage_bps"):
            if d.get(key) is not None:
                setattr(f, key, _text(d[key]))
        out.append(f)
    return out


def exact_book(pb: ModuleType, book: BookLike, levels: int) -> Any:
    """``bookmux.Book``: the contract's snapshot with exact decimal text, cut to ``levels`` per
    side (0 = all). ``spread`` is absent when a side is empty; ``depletion`` and ``venue_ts`` are
    copied when the snapshot has them."""
    bids = book.bids[:levels] if levels else book.bids
    asks = book.asks[:levels] if levels else book.asks
    msg = pb.Book(
        symbol=book.symbol, epoch=book.epoch, seq=book.seq, ts=book.ts,
        bids=[pb.Level(price=fmt(lv.price), amount=fmt(lv.amount), venue=lv.venue) for lv in bids],
        asks=[pb.Level(price=fmt(lv.price), amount=fmt(lv.amount), venue=lv.venue) for lv in asks],
        venues=dict(book.venues))
    if book.spread is not None and book.bids and book.asks:
        msg.spread = fmt(book.spread)
    depl = getattr(book, "depletion", None)
    if isinstance(depl, Mapping):
        msg.depletion.CopyFrom(pb.Depletion(buy=_fills(pb, depl.get("buy")), sell=_fills(pb, depl.get("sell"))))
    vts = getattr(book, "venue_ts", None)
    if isinstance(vts, Mapping):
        for venue, t in vts.items():
            if isinstance(venue, str) and isinstance(t, Mapping):
                msg.venue_ts[venue].CopyFrom(pb.VenueTimes(
                    **{k: int(t[k]) for k in ("ets", "rts", "heard") if isinstance(t.get(k), int)}))
    return msg
