"""One order-book type for every stage: a venue's full-depth book of exact price levels.

Both sides are ``SortedDict``\\ s keyed by price (``Decimal``) with the absolute quantity as value;
bids are read from the top of their dict, asks from the bottom. Quantities are absolute sizes as
the venues send them: ``apply(side, price, 0)`` removes the level (removing an unknown level is
normal and a no-op).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import islice

from sortedcontainers import SortedDict

BID = 0
ASK = 1

Level = tuple[Decimal, Decimal]

_dict_set = dict.__setitem__
_dict_del = dict.__delitem__


class BookError(AssertionError):
    """An invariant of :class:`Book` does not hold (raised by :meth:`Book.check`)."""


class Book:
    """A price-level order book.

    ``apply`` is O(log n), ``best`` O(1), ``levels(side, n)`` O(log n + n), ``load`` O(n log n).
    """

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def __repr__(self) -> str:
        bid, ask = self.best()
        return f"<Book {len(self.bids)} bids {len(self.asks)} asks best {bid} / {ask}>"

    def clear(self) -> None:
        """Remove every level. O(1)."""
        self.bids.clear()
        self.asks.clear()

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book with these levels (zero quantities are skipped)."""
        self.bids = SortedDict((p, q) for p, q in bids if q)
        self.asks = SortedDict((p, q) for p, q in asks if q)

    def apply(self, side: int, price: Decimal, qty: Decimal) -> None:
        """Set the level at ``price`` on ``side`` (``BID``/``ASK``) to ``qty``; 0 removes it."""
        d = self.bids if side == BID else self.asks
        if qty:
            d[price] = qty
        else:
            d.pop(price, None)

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply a venue update (bids then asks), each level as in :meth:`apply`.

        The hot path of the aggregator: the ``SortedDict`` methods are inlined (a quantity
        update of a known price is one ``dict`` store; only a new or removed price touches the
        sorted key list), with the same effect as ``d[price] = qty`` / ``d.pop(price, None)``."""
        for d, levels in ((self.bids, bids), (self.asks, asks)):
            if not levels:
                continue
            keys = d._list
            for price, qty in levels:
                if qty:
                    if price not in d:
                        keys.add(price)
                    _dict_set(d, price, qty)
                elif price in d:
                    keys.remove(price)
                    _dict_del(d, price)

    def best(self) -> tuple[Level | None, Level | None]:
        """``(best bid, best ask)``, each ``(price, qty)`` or ``None`` for an empty side."""
        bid = self.bids.peekitem(-1) if self.bids else None
        ask = self.asks.peekitem(0) if self.asks else None
        return bid, ask

    def levels(self, side: int, n: int | None = None) -> list[Level]:
        """The best ``n`` levels of ``side`` (all when ``n`` is None), best first."""
        return list(islice(self.iter_side(side), n))

    def iter_side(self, side: int) -> Iterator[Level]:
        """Iterate the levels of ``side`` best first (lazily: walking k levels is O(k))."""
        if side == BID:
            d = self.bids
            return ((p, d[p]) for p in reversed(d))
        d = self.asks
        return ((p, d[p]) for p in d)

    def crossed(self) -> bool:
        """True when best bid >= best ask (a venue book must never be; the merged view may be)."""
        return bool(self.bids and self.asks and self.bids.peekitem(-1)[0] >= self.asks.peekitem(0)[0])

    def check(self) -> None:
        """Verify the invariants, raising :class:`BookError`: every key and value is a finite
        ``Decimal``, every price and quantity is > 0, and the sorted structure is consistent.
        Crossing is reported by :meth:`crossed`, not here. O(n).
        """
        for name, d in (("bids", self.bids), ("asks", self.asks)):
            for p, q in d.items():
                if not isinstance(p, Decimal) or not isinstance(q, Decimal):
                    raise BookError(f"{name}: non-Decimal level {p!r}: {q!r}")
                if not p.is_finite() or not q.is_finite():
                    raise BookError(f"{name}: non-finite level {p}: {q}")
                if p <= 0:
                    raise BookError(f"{name}: price {p} <= 0")
                if q <= 0:
                    raise BookError(f"{name}: quantity {q} <= 0 at {p}")
            try:
                d._check()
            except AssertionError as e:
                raise BookError(f"{name}: sorted structure broken: {e}") from None
