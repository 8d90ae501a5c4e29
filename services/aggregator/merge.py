"""The merged view of one symbol across venues, as subscribers see it (pure functions).

Only ``live`` venues contribute; dust (per venue and symbol) is skipped in the merged view but kept
in the venue book. Levels are ``(price, amount, venue)``; bids best (highest) first, asks lowest
first; at equal price the larger amount first, then the venue id.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from itertools import islice

from common.book import BID, Book
from common.config import NO_DUST, DustRule

MergedLevel = tuple[Decimal, Decimal, str]


def _tagged(levels: Iterable[tuple[Decimal, Decimal]], venue: str, dust: DustRule) -> Iterator[MergedLevel]:
    check = dust.min_amount or dust.min_notional
    for price, amount in levels:
        if check and dust.is_dust(price, amount):
            continue
        yield price, amount, venue


def merge_levels(sides: Mapping[str, Iterable[tuple[Decimal, Decimal]]], side: int,
                 dust: Mapping[str, DustRule] | None = None) -> Iterator[MergedLevel]:
    """Lazily merge venue sides (each ``(price, amount)`` best first) into one best-first stream
    of ``(price, amount, venue)``: bids highest first, asks lowest first, at equal price the
    larger amount first, then the venue id; dust (per venue) skipped. Heap merge: O(log V) per
    level."""
    iters = [_tagged(levels, v, (dust or {}).get(v, NO_DUST)) for v, levels in sorted(sides.items())]
    if side == BID:
        return heapq.merge(*iters, key=lambda lv: (-lv[0], -lv[1], lv[2]))
    return heapq.merge(*iters, key=lambda lv: (lv[0], -lv[1], lv[2]))


def merged_iter(books: Mapping[str, Book], side: int, dust: Mapping[str, DustRule]) -> Iterator[MergedLevel]:
    """The merged view of ``books`` (only the venues that may contribute: the live ones)."""
    return merge_levels({v: b.iter_side(side) for v, b in books.items()}, side, dust)


def top(books: Mapping[str, Book], side: int, dust: Mapping[str, DustRule], n: int) -> list[MergedLevel]:
    """The best ``n`` merged levels of ``side``. O(V * n) with V venues."""
    return list(islice(merged_iter(books, side, dust), n))


def spread(bids: list[MergedLevel], asks: list[MergedLevel]) -> Decimal | None:
    """Best ask - best bid (negative when venues cross), None when a side is empty."""
    if not bids or not asks:
        return None
    return asks[0][0] - bids[0][0]



def shallowest(exact: Iterable[Decimal | None], side: int) -> Decimal | None:
    """The merged book's exact-to price on ``side`` from its venues' (None = a whole side): the
    least deep of them (highest bid, lowest ask), since a walk past it may miss that venue's
    unknown levels. None when no venue caps its depth."""
    known = [p for p in exact if p is not None]
    if not known:
        return None
    return max(known) if side == BID else min(known)
