"""The simulator's market model: one independent *true* order book per venue and symbol.

No I/O, no clock, no asyncio: a :class:`Market` is driven by its caller, which asks for the next
event (:meth:`Market.step`), gets the level changes back *already applied* to the truth, and
sends exactly those changes on the wire. Truth therefore always equals "initial book + every
change emitted so far", which is what the control interface's ``/book`` reports.

Model (deliberately simple, but with the shapes a feed meets in reality):

* a mid price ``m`` (an integer number of ticks) does a random walk; bids live strictly below
  ``m``, asks strictly above, so the book is never crossed and the spread is >= 2 ticks;
* a few hundred levels per side at random gaps of 1..4 ticks, amounts with 8 decimals;
* each event changes a few levels: a new size for an existing level (mostly near the top),
  a deletion, or an insertion at a free price; when the mid moves through levels of the other
  side those levels are deleted in the same event;
* the side lengths are held between ``min_levels`` and ``max_levels`` by deleting far levels or
  inserting deep ones.

Everything is drawn from a ``random.Random`` the caller seeds, so a seed gives the same books
and the same event contents (timing is the caller's business).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

AMOUNT_EXP = Decimal("0.00000001")  # amounts carry 8 decimals on every simulated venue
ZERO = Decimal(0)


@dataclass(frozen=True)
class SymbolSpec:
    """Static facts about one simulated symbol (also used for the venues' pair lists)."""

    symbol: str          # canonical "BASE/QUOTE"
    tick: Decimal        # price step
    mid: Decimal         # starting mid price
    amount_decimals: int = 8

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    @property
    def price_decimals(self) -> int:
        return max(0, -self.tick.as_tuple().exponent)  # type: ignore[operator]


def spec_for(symbol: str) -> SymbolSpec:
    """Realistic tick and start price: BTC ~ 43000 (tick 0.01), ETH ~ 2300 (tick 0.01),
    anything else ~ 100 (tick 0.001)."""
    base = symbol.split("/")[0]
    if base == "BTC":
        return SymbolSpec(symbol, Decimal("0.01"), Decimal("43000"))
    if base == "ETH":
        return SymbolSpec(symbol, Decimal("0.01"), Decimal("2300"))
    return SymbolSpec(symbol, Decimal("0.001"), Decimal("100"))


def canonical(d: Decimal) -> str:
    """Plain positional text without exponent or trailing zeros: 43250.1, 0.5, 12."""
    if d == 0:
        return "0"
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fixed(d: Decimal, decimals: int) -> str:
    """Text with exactly ``decimals`` decimals, as venues send it: fixed(Decimal('1.5'), 8) ->
    '1.50000000'. Raises if that would round (a model bug, never silent)."""
    q = d.quantize(Decimal(1).scaleb(-decimals))
    if q != d:
        raise ValueError(f"{d} does not fit {decimals} decimals")
    return format(q, "f")


Level = tuple[Decimal, Decimal]  # (price, amount); amount 0 = delete


@dataclass
class Changes:
    """One event's level changes, in the order they were applied."""

    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


@dataclass
class Book:
    """A true book: plain dicts price -> amount (amount > 0)."""

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)

    def copy(self) -> Book:
        return Book(dict(self.bids), dict(self.asks))

    def sorted_bids(self, n: int | None = None) -> list[Level]:
        """Best (highest) first. O(k log k)."""
        return sorted(self.bids.items(), reverse=True)[:n]

    def sorted_asks(self, n: int | None = None) -> list[Level]:
        """Best (lowest) first. O(k log k)."""
        return sorted(self.asks.items())[:n]

    def apply(self, changes: Changes) -> Changes:
        """Apply ``changes``; return the changes that undo them (in reverse order)."""
        undo = Changes()
        for side, items, out in ((self.bids, changes.bids, undo.bids), (self.asks, changes.asks, undo.asks)):
            for price, amount in items:
                out.append((price, side.get(price, ZERO)))
                if amount:
                    side[price] = amount
                else:
                    side.pop(price, None)
        undo.bids.reverse()
        undo.asks.reverse()
        return undo

    def check(self) -> None:
        """Invariants: positive amounts, not crossed. Raises AssertionError."""
        assert all(a > 0 for a in self.bids.values()), "non-positive bid amount"
        assert all(a > 0 for a in self.asks.values()), "non-positive ask amount"
        if self.bids and self.asks:
            assert max(self.bids) < min(self.asks), "crossed book"


@dataclass
class _Past:
    when: float          # caller's clock (seconds) at which the event was applied
    marker_before: int   # the venue marker (update id / microtimestamp) before the event
    undo: Changes


class Market:
    """One venue's true book for one symbol, with a short history for lagged snapshots.

    ``marker`` is an integer the venue adapter attaches to the current state (Binance: the last
    update id; Bitstamp: the microtimestamp of the last diff); :meth:`state_at` returns an old
    state together with the marker it had.
    """

    def __init__(self, spec: SymbolSpec, rng: random.Random, *, min_levels: int = 250,
                 max_levels: int = 500, history_seconds: float = 30.0, marker: int = 0) -> None:
        self.spec = spec
        self.rng = rng
        self.min_levels = min_levels
        self.max_levels = max_levels
        self.history_seconds = history_seconds
        self.marker = marker
        self.book = Book()
        self._history: deque[_Past] = deque()
        self.m = int(spec.mid / spec.tick)  # mid in ticks; bids < m < asks
        self._fill()

    # --- prices --------------------------------------------------------------------------------

    def _price(self, ticks: int) -> Decimal:
        return self.spec.tick * ticks

    def _ticks(self, price: Decimal) -> int:
        return int(price / self.spec.tick)

    def _amount(self, deep: bool = False) -> Decimal:
        r = self.rng
        scale = r.choice((10**5, 10**6, 10**7, 10**8, 10**8, 10**9)) * (3 if deep else 1)
        return Decimal(r.randint(1, scale)).scaleb(-8)

    def _fill(self) -> None:
        n = (self.min_levels + self.max_levels) // 2
        t = self.m
        for _ in range(n):
            t -= self.rng.randint(1, 4)
            self.book.bids[self._price(t)] = self._amount()
        t = self.m
        for _ in range(n):
            t += self.rng.randint(1, 4)
            self.book.asks[self._price(t)] = self._amount()

    # --- events --------------------------------------------------------------------------------

    def next_changes(self, *, burst: bool = False) -> Changes:
        """Draw one event's changes from the current truth (does not apply them)."""
        r = self.rng
        ch = Changes()
        book = self.book
        # A mid move now and then; levels it passes through are taken out.
        if r.random() < 0.15:
            step = r.choice((-3, -2, -1, 1, 2, 3))
            self.m += step
            lim = self._price(self.m)
            if step > 0:
                ch.asks.extend((p, ZERO) for p in sorted(p for p in book.asks if p <= lim))
            else:
                ch.bids.extend((p, ZERO) for p in sorted((p for p in book.bids if p >= lim), reverse=True))
        n_ops = r.randint(1, 4) if not burst else r.randint(15, 50)
        touched: set[tuple[str, Decimal]] = {("b", p) for p, _ in ch.bids} | {("a", p) for p, _ in ch.asks}
        for _ in range(n_ops):
            is_bid = r.random() < 0.5
            side, out, key = (book.bids, ch.bids, "b") if is_bid else (book.asks, ch.asks, "a")
            sign = -1 if is_bid else 1
            op = r.random()
            n = len(side)
            if op < 0.5 and n:
                # new size at an existing level, biased to the top of the book
                k = min(int(r.expovariate(1 / 12)), n - 1)
                price = self._kth(side, is_bid, k)
                amount = self._amount()
            elif op < 0.75 and n > self.min_levels:
                k = min(int(r.expovariate(1 / 20)), n - 1) if r.random() < 0.7 else r.randrange(n)
                price = self._kth(side, is_bid, k)
                amount = ZERO
            else:
                # insert (or overwrite) at a price within ~60 ticks of the mid, or deep
                dist = r.randint(1, 60) if r.random() < 0.8 else r.randint(61, 4 * self.max_levels)
                price = self._price(self.m + sign * dist)
                amount = self._amount(deep=dist > 60)
            if (key, price) in touched:
                continue
            if amount == ZERO and price not in side:
                continue
            touched.add((key, price))
            out.append((price, amount))
        self._trim(ch, touched)
        return ch

    def _kth(self, side: dict[Decimal, Decimal], is_bid: bool, k: int) -> Decimal:
        # k-th best price; k is small most of the time, so a partial sort suffices. O(n log k).
        pick = heapq.nlargest if is_bid else heapq.nsmallest
        return pick(k + 1, side)[-1]

    def _trim(self, ch: Changes, touched: set[tuple[str, Decimal]]) -> None:
        """Keep each side's length within bounds once ``ch`` is applied."""
        for side, out, key, is_bid in ((self.book.bids, ch.bids, "b", True),
                                       (self.book.asks, ch.asks, "a", False)):
            after = dict(side)
            for p, a in out:
                if a:
                    after[p] = a
                else:
                    after.pop(p, None)
            extra = len(after) - self.max_levels
            missing = self.min_levels - len(after)
            if missing > 0:
                # add deep levels beyond the farthest one
                far_ticks = self._ticks(min(after) if is_bid else max(after)) if after else self.m
                for _ in range(missing):
                    far_ticks += (-1 if is_bid else 1) * self.rng.randint(1, 4)
                    p = self._price(far_ticks)
                    out.append((p, self._amount(deep=True)))
                    touched.add((key, p))
            if extra > 0:
                # delete the farthest levels
                far = sorted(after, reverse=not is_bid)
                for p in far:
                    if extra <= 0:
                        break
                    if (key, p) not in touched:
                        out.append((p, ZERO))
                        touched.add((key, p))
                        extra -= 1

    def step(self, marker: int, now: float, *, burst: bool = False) -> Changes:
        """Draw the next event, apply it to the truth (the state's marker becomes ``marker``)
        and return it: the caller sends exactly these changes."""
        changes = self.next_changes(burst=burst)
        self.commit(changes, marker, now)
        return changes

    def commit(self, changes: Changes, marker: int, now: float) -> None:
        """Apply ``changes`` to the truth, remember how to undo them, and move the marker."""
        undo = self.book.apply(changes)
        self._history.append(_Past(now, self.marker, undo))
        self.marker = marker
        cutoff = now - self.history_seconds
        while self._history and self._history[0].when < cutoff:
            self._history.popleft()

    def state_at(self, age: float, now: float) -> tuple[Book, int]:
        """The book and marker as they were ``age`` seconds before ``now`` (limited to the kept
        history: an older request gets the oldest kept state). O(levels + changes undone)."""
        book = self.book.copy()
        marker = self.marker
        cutoff = now - age
        for past in reversed(self._history):
            if past.when <= cutoff:
                break
            book.apply(past.undo)
            marker = past.marker_before
        return book, marker


def apply_levels(side: dict[Decimal, Decimal], levels: Iterable[Level]) -> None:
    """Set absolute amounts; amount 0 deletes (deleting an unknown level is fine)."""
    for p, a in levels:
        if a:
            side[p] = a
        else:
            side.pop(p, None)


Sent = tuple[Decimal, Decimal, bool]  # (price, amount, republished); amount 0 = delete


class DepthView:
    """What a client of a depth-limited book subscription holds (Kraken's ``depth``): the best
    ``depth`` levels per side of the truth, kept in step with it by :meth:`advance`.

    The venue's rule, which the client follows too: apply every level of a message, then cut each
    side to ``depth``; levels pushed out of scope that way get no delete on the wire, and a level
    that enters the scope because another one left is sent ("republished"). Invariant: after
    every :meth:`advance`, ``bids``/``asks`` equal the best ``depth`` levels of the truth.
    """

    def __init__(self, depth: int, book: Book) -> None:
        self.depth = depth
        self.bids: dict[Decimal, Decimal] = dict(heapq.nlargest(depth, book.bids.items()))
        self.asks: dict[Decimal, Decimal] = dict(heapq.nsmallest(depth, book.asks.items()))

    def sorted_bids(self) -> list[Level]:
        return sorted(self.bids.items(), reverse=True)

    def sorted_asks(self) -> list[Level]:
        return sorted(self.asks.items())

    def advance(self, book: Book, changes: Changes) -> tuple[list[Sent], list[Sent]]:
        """Move the view to ``book`` (the truth with ``changes`` already applied) and return what
        the venue sends for it, per side, in order: the changes that touch the scope (in their
        order), then the republished levels, best first. O(depth + changes), plus O(levels) when
        levels have to be republished."""
        return (_advance(self.bids, book.bids, changes.bids, self.depth, True),
                _advance(self.asks, book.asks, changes.asks, self.depth, False))


def _advance(held: dict[Decimal, Decimal], truth: dict[Decimal, Decimal], changes: list[Level],
             depth: int, is_bid: bool) -> list[Sent]:
    # Before the changes ``held`` is the truth's best ``depth`` levels, so every truth level better
    # than its worst (``bound``) is in it; a new level better than ``bound`` enters the scope.
    bound = (min(held) if is_bid else max(held)) if len(held) >= depth and held else None
    out: list[Sent] = []
    for p, q in changes:
        if p in held:
            if q:
                held[p] = q
            else:
                del held[p]
            out.append((p, q, False))
        elif q and (bound is None or (p > bound if is_bid else p < bound)):
            held[p] = q
            out.append((p, q, False))
    excess = len(held) - depth
    if excess > 0:  # pushed out of scope: the client cuts them too, nothing is sent
        for p in (heapq.nsmallest if is_bid else heapq.nlargest)(excess, held):
            del held[p]
    missing = depth - len(held)
    if missing > 0 and len(truth) > len(held):
        # every truth level outside ``held`` is worse than all of it: the best of them come in
        pick = heapq.nlargest if is_bid else heapq.nsmallest
        for p in pick(missing, (p for p in truth if p not in held)):
            held[p] = truth[p]
            out.append((p, truth[p], True))
    return out
