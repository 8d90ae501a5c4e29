"""The merged view of one symbol across venues, as subscribers see it (pure functions).

Only ``live`` venues contribute; dust (per venue and symbol) is skipped in the merged view but kept
in the venue book. Levels are ``(price, amount, venue)``; bids best (highest) first, asks lowest
first; at equal price the larger amount first, then the venue id.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from decimal import Decimal
from itertools import islice

from common.book import BID, Book
from common.config import DustRule
from common.numbers import fmt

MergedLevel = tuple[Decimal, Decimal, str]


def _venue_iter(book: Book, side: int, venue: str, dust: DustRule) -> Iterator[MergedLevel]:
    check = dust.min_amount or dust.min_notional
    for price, amount in book.iter_side(side):
        if check and dust.is_dust(price, amount):
            continue
        yield price, amount, venue


def merged_iter(books: Mapping[str, Book], side: int, dust: Mapping[str, DustRule]) -> Iterator[MergedLevel]:
    """Lazily merge the venue books' ``side`` best first (heap merge: O(log V) per level).

    ``books`` holds only the venues that may contribute (the live ones).
    """
    iters = [_venue_iter(b, side, v, dust[v]) for v, b in sorted(books.items())]
    if side == BID:
        return heapq.merge(*iters, key=lambda lv: (-lv[0], -lv[1], lv[2]))
    return heapq.merge(*iters, key=lambda lv: (lv[0], -lv[1], lv[2]))


def top(books: Mapping[str, Book], side: int, dust: Mapping[str, DustRule], n: int) -> list[MergedLevel]:
    """The best ``n`` merged levels of ``side``. O(V * n) with V venues."""
    return list(islice(merged_iter(books, side, dust), n))


def spread(bids: list[MergedLevel], asks: list[MergedLevel]) -> Decimal | None:
    """Best ask - best bid (negative when venues cross), None when a side is empty."""
    if not bids or not asks:
        return None
    return asks[0][0] - bids[0][0]


def wire_levels(levels: list[MergedLevel]) -> list[list[str]]:
    """Levels in the subscriber contract's canonical text form."""
    return [[fmt(p), fmt(a), v] for p, a, v in levels]
