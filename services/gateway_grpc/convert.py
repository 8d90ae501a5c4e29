"""Pure conversions from a merged book to the gateway's protobuf messages (no I/O, no state).

:func:`summary` is the one place in bookmux where a price or an amount becomes a float: the
original challenge's ``Summary`` carries IEEE doubles, so ``float(Decimal)`` (correctly rounded to
the nearest double) happens here, at the very edge, and nowhere upstream. :func:`exact_book`
keeps every number as the canonical decimal text of the subscriber contract.

The input is a :class:`common.schema.MergedBook` (the client library's typed book). Levels arrive
best first, at equal price the larger amount first (the contract's order, which is the
original's); both conversions keep that order and cut to the first ``levels`` of each side.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import ModuleType
from typing import Any

from common.numbers import fmt
from common.schema import DepletionSummary, MergedBook


def summary(pb: ModuleType, book: MergedBook, levels: int) -> Any:
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


def _fills(pb: ModuleType, side: Mapping[Decimal, DepletionSummary]) -> list[Any]:
    out: list[Any] = []
    for size, d in side.items():
        f = pb.Fill(size=fmt(size), filled=fmt(d.filled), levels=d.levels, partial=d.partial)
        if d.vwap is not None:
            f.vwap = fmt(d.vwap)
        if d.worst is not None:
            f.worst = fmt(d.worst)
        if d.slippage_bps is not None:
            f.slippage_bps = fmt(d.slippage_bps)
        out.append(f)
    return out


def exact_book(pb: ModuleType, book: MergedBook, levels: int) -> Any:
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
    if book.depletion is not None:
        msg.depletion.CopyFrom(pb.Depletion(buy=_fills(pb, book.depletion.get("buy", {})),
                                            sell=_fills(pb, book.depletion.get("sell", {}))))
    for venue, t in (book.venue_ts or {}).items():
        msg.venue_ts[venue].CopyFrom(pb.VenueTimes(ets=t.ets, rts=t.rts, heard=t.heard))
    return msg
