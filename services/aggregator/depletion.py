"""Liquidity depletion: what an order of a given size would take out of a book (pure functions).

No sockets, no clock, no state: :func:`deplete` walks an iterable of levels ``(price, amount,
venue)`` best first (one venue's book, or the merged book as subscribers see it) and returns a
:class:`Depletion`. A ``buy`` takes asks, a ``sell`` takes bids; the caller hands over the right
side (:func:`book_side` says which).

Numbers (the rounding rule)
---------------------------
* Sums are exact. Every product ``price * amount`` and every sum (filled amount, notional, fee) is
  computed in :data:`EXACT`, a context with the maximum precision that traps ``Inexact``: if a
  result could not be represented exactly the walk raises instead of rounding silently.
* Divisions (VWAP, slippage, basis points, fee-inclusive average) are one ``Decimal`` division each
  of exact operands in :data:`common.numbers.DIV_CONTEXT` (28 significant digits, half-even).
  :class:`Depletion` keeps these 28-digit values.
* Shown values (:meth:`Depletion.to_wire`, the streamed summaries) round VWAP, slippage, basis
  points and fee-inclusive average half-even to ``places + 4`` decimals, where ``places`` is the
  largest number of decimals of any price the walk touched, trailing zeros ignored (``"67000.10"``
  has 1). Amounts and sums are shown exactly.
* By notional (``notional="100000"`` quote units), a level that costs more than what is left is
  taken in part: ``amount = left / price`` truncated (toward zero) to 28 significant digits, so the
  walk never spends more than asked; what is left over is below ``price * 1e-27 * amount`` and
  does not make the fill partial.

Partial fills
-------------
``partial`` is true when the levels ran out before the requested quantity (or notional) was
reached; it is a normal result, not an error. An empty side gives ``filled == 0`` and ``None`` for
every average.

Slippage
--------
Measured from the best price of the side (the first level) to the VWAP, signed so that a positive
value is a cost to the taker: ``vwap - best`` for a buy, ``best - vwap`` for a sell; in basis points
``slippage / best * 10000``. Fees are not part of slippage; with fees the fee-inclusive average is
``(notional + fee) / filled`` for a buy and ``(notional - fee) / filled`` for a sell.

Complexity
----------
:func:`deplete` consumes only the levels it needs (it stops at the first level that completes the
order): O(k) for k levels consumed, plus the cost of producing them (a heap merge over V venues is
O(k log V)). :func:`summaries` walks each side once for all sizes: O(k log V + k * S) for S sizes.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.book import ASK, BID
from common.numbers import DIV_CONTEXT, ZERO, fmt

BUY = "buy"
SELL = "sell"
SIDES = (BUY, SELL)

QUANTITY = "quantity"
NOTIONAL = "notional"

#: Exact arithmetic for sums and products: unbounded precision, and a trap on any rounding.
EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                        traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow,
                               decimal.DivisionByZero])

#: Partial level by notional: ``left / price`` truncated, so the spend never exceeds the request.
DIV_DOWN = decimal.Context(prec=DIV_CONTEXT.prec, rounding=decimal.ROUND_DOWN)

#: Rounding for display (enough precision that quantizing a 28-digit value never fails).
_SHOW = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_EVEN)

#: Extra decimals shown beyond the prices' own.
EXTRA_PLACES = 4

_TEN_THOUSAND = Decimal(10000)

Fill = tuple[Decimal, Decimal, str]


def book_side(side: str) -> int:
    """The book side an order of ``side`` takes: ``"buy"`` -> ``ASK``, ``"sell"`` -> ``BID``."""
    if side == BUY:
        return ASK
    if side == SELL:
        return BID
    raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")


def decimals(price: Decimal) -> int:
    """Number of decimals of ``price`` ignoring trailing zeros (``67000.10`` -> 1, ``1E+2`` -> 0).
    O(number of digits)."""
    _, digits, exp = price.as_tuple()
    if not isinstance(exp, int) or exp >= 0:
        return 0
    n, i = -exp, len(digits)
    while n and i and digits[i - 1] == 0:
        n -= 1
        i -= 1
    return n


#: :func:`decimals` memoised for the streamed walks (the same book prices are walked again and
#: again; a price that is a book key has its hash cached).
_decimals = functools.lru_cache(maxsize=8192)(decimals)


def show(value: Decimal | None, places: int) -> str | None:
    """``value`` rounded half-even to ``places`` decimals, as canonical text (None stays None)."""
    if value is None:
        return None
    exp = value.as_tuple().exponent
    if isinstance(exp, int) and exp < -places:
        value = value.quantize(Decimal(1).scaleb(-places), context=_SHOW)
    return fmt(value)


def _opt(d: Decimal | None) -> str | None:
    return None if d is None else fmt(d)


@dataclass(frozen=True, slots=True)
class VenueShare:
    """One venue's part of a walk: exact sums; ``vwap`` is a 28-digit division."""

    filled: Decimal
    notional: Decimal
    levels: int
    worst: Decimal
    fee: Decimal | None

    @property
    def vwap(self) -> Decimal:
        return DIV_CONTEXT.divide(self.notional, self.filled)

    def to_wire(self, places: int) -> dict[str, Any]:
        return {"filled": fmt(self.filled), "notional": fmt(self.notional), "levels": self.levels,
                "vwap": show(self.vwap, places), "worst": fmt(self.worst), "fee": _opt(self.fee)}


@dataclass(frozen=True, slots=True)
class Depletion:
    """The result of one walk.

    ``requested`` is in base units when ``mode == "quantity"`` and in quote units when ``mode ==
    "notional"``; ``filled`` is always base units and ``notional`` the exact quote amount paid (buy)
    or received (sell) before fees. ``vwap``, ``slippage``, ``slippage_bps`` and ``vwap_fee`` are
    28-digit divisions, ``None`` when nothing was filled (``vwap_fee`` and ``fee`` also when no
    fees were given). ``places`` is the decimals of the prices touched (see the module docstring).
    """

    side: str
    mode: str
    requested: Decimal
    filled: Decimal
    notional: Decimal
    partial: bool
    levels: int
    best: Decimal | None
    worst: Decimal | None
    vwap: Decimal | None
    slippage: Decimal | None
    slippage_bps: Decimal | None
    fee: Decimal | None
    vwap_fee: Decimal | None
    fills: tuple[Fill, ...]
    venues: Mapping[str, VenueShare] = field(default_factory=dict)
    places: int = 0

    @property
    def shown_places(self) -> int:
        """Decimals shown for divided values: the prices' decimals + :data:`EXTRA_PLACES`."""
        return self.places + EXTRA_PLACES

    def fills_by_venue(self) -> dict[str, list[tuple[Decimal, Decimal]]]:
        """The fills grouped per venue, each list in walk order (best first)."""
        out: dict[str, list[tuple[Decimal, Decimal]]] = {}
        for price, amount, venue in self.fills:
            out.setdefault(venue, []).append((price, amount))
        return out

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able map of canonical decimal strings (``None`` where undefined); shape in
        ``docs/depletion.md``."""
        p = self.shown_places
        return {
            "side": self.side, "mode": self.mode, "requested": fmt(self.requested),
            "filled": fmt(self.filled), "notional": fmt(self.notional), "partial": self.partial,
            "levels": self.levels, "best": _opt(self.best), "worst": _opt(self.worst),
            "vwap": show(self.vwap, p), "slippage": show(self.slippage, p),
            "slippage_bps": show(self.slippage_bps, p), "fee": _opt(self.fee),
            "vwap_fee": show(self.vwap_fee, p),
            "fills": [[fmt(price), fmt(amount), venue] for price, amount, venue in self.fills],
            "venues": {v: s.to_wire(p) for v, s in self.venues.items()},
        }

    def summary(self, exact_to: Decimal | None = None) -> dict[str, Any]:
        """The compact form streamed with every snapshot: filled, vwap, worst, slippage_bps,
        levels, partial, and how deep the book walked is known exactly (``exact_to``: its
        deepest exact price, None = all of it; ``beyond_known_depth``: the walk went past it)."""
        p = self.shown_places
        return {"filled": fmt(self.filled), "vwap": show(self.vwap, p), "worst": _opt(self.worst),
                "slippage_bps": show(self.slippage_bps, p), "levels": self.levels,
                "partial": self.partial, "exact_to": _opt(exact_to),
                "beyond_known_depth": beyond(self.side, self.worst, self.partial, exact_to)}


def _target(quantity: Decimal | None, notional: Decimal | None) -> tuple[str, Decimal]:
    if (quantity is None) == (notional is None):
        raise ValueError("give exactly one of quantity and notional")
    mode, value = (QUANTITY, quantity) if quantity is not None else (NOTIONAL, notional)
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ValueError(f"{mode} must be a finite Decimal > 0, got {value!r}")
    return mode, value


def deplete(levels: Iterable[Fill], side: str, *, quantity: Decimal | None = None,
            notional: Decimal | None = None, fees: Mapping[str, Decimal] | None = None) -> Depletion:
    """Walk ``levels`` (``(price, amount, venue)``, best first) to fill an order of ``side``.

    Exactly one of ``quantity`` (base units) and ``notional`` (quote units) must be given, > 0.
    ``fees`` maps venue -> taker fee rate (``Decimal("0.001")`` is 0.1%; a venue not in it pays 0);
    with ``fees=None`` the fee fields are ``None``. Levels with amount <= 0 are skipped; a price
    <= 0 is a ``ValueError``, as are a bad side or target. The iterable is consumed lazily and
    left positioned after the last level used. O(k) for k levels consumed.
    """
    book_side(side)
    mode, target = _target(quantity, notional)
    by_notional = mode == NOTIONAL
    mul, add, sub = EXACT.multiply, EXACT.add, EXACT.subtract
    left = target
    filled = cost = fee_total = ZERO
    best: Decimal | None = None
    places = 0
    fills: list[Fill] = []
    shares: dict[str, list[Any]] = {}   # venue -> [filled, notional, levels, worst, fee]
    done = False
    for price, amount, venue in levels:
        if amount <= 0:
            continue
        if price <= 0:
            raise ValueError(f"price must be > 0, got {price} ({venue})")
        if best is None:
            best = price
        places = max(places, decimals(price))
        if by_notional:
            spent = mul(price, amount)
            if spent < left:
                take = amount
            else:
                take = amount if spent == left else DIV_DOWN.divide(left, price)
                spent = mul(price, take)
                done = True
            left = sub(left, spent)
        else:
            if amount < left:
                take = amount
            else:
                take = left
                done = True
            left = sub(left, take)
            spent = mul(price, take)
        fee = mul(spent, fees.get(venue, ZERO)) if fees is not None else ZERO
        fills.append((price, take, venue))
        filled, cost, fee_total = add(filled, take), add(cost, spent), add(fee_total, fee)
        sh = shares.get(venue)
        if sh is None:
            shares[venue] = [take, spent, 1, price, fee]
        else:
            sh[0], sh[1], sh[2], sh[3], sh[4] = add(sh[0], take), add(sh[1], spent), sh[2] + 1, price, \
                add(sh[4], fee)
        if done:
            break

    vwap = slip = bps = vwap_fee = None
    if filled:
        vwap = DIV_CONTEXT.divide(cost, filled)
        assert best is not None
        at_best = mul(best, filled)
        gap = sub(cost, at_best) if side == BUY else sub(at_best, cost)
        slip = DIV_CONTEXT.divide(gap, filled)
        bps = DIV_CONTEXT.divide(mul(gap, _TEN_THOUSAND), at_best)
        if fees is not None:
            net = add(cost, fee_total) if side == BUY else sub(cost, fee_total)
            vwap_fee = DIV_CONTEXT.divide(net, filled)
    has_fees = fees is not None
    return Depletion(
        side=side, mode=mode, requested=target, filled=filled, notional=cost, partial=not done,
        levels=len(fills), best=best, worst=fills[-1][0] if fills else None, vwap=vwap, slippage=slip,
        slippage_bps=bps, fee=fee_total if has_fees else None, vwap_fee=vwap_fee, fills=tuple(fills),
        venues={v: VenueShare(s[0], s[1], s[2], s[3], s[4] if has_fees else None)
                for v, s in shares.items()},
        places=places,
    )


def beyond(side: str, worst: Decimal | None, partial: bool, exact_to: Decimal | None) -> bool:
    """Did a walk go past the depth its book is known exactly to (``exact_to``: the deepest exact
    price of the side walked, None = the whole side is known)? True when it took a level beyond
    that price, or ran out of levels while deeper ones may exist unseen. A walk ending at
    ``exact_to`` itself is exact."""
    if exact_to is None:
        return False
    if partial or worst is None:
        return True
    return worst < exact_to if side == SELL else worst > exact_to


def depth_note(side: str, d: Depletion, exact_to: Decimal | None) -> dict[str, Any]:
    """The keys a query reply adds to a walk: ``exact_to`` and ``beyond_known_depth``."""
    return {"exact_to": _opt(exact_to), "beyond_known_depth": beyond(side, d.worst, d.partial, exact_to)}


def _summary(side: str, filled: Decimal, cost: Decimal, best: Decimal | None, worst: Decimal | None,
             levels: int, places: int, partial: bool) -> dict[str, Any]:
    """:meth:`Depletion.summary` from a walk's running sums (same arithmetic as :func:`deplete`)."""
    vwap = bps = None
    if filled:
        assert best is not None
        vwap = DIV_CONTEXT.divide(cost, filled)
        at_best = EXACT.multiply(best, filled)
        gap = EXACT.subtract(cost, at_best) if side == BUY else EXACT.subtract(at_best, cost)
        bps = DIV_CONTEXT.divide(EXACT.multiply(gap, _TEN_THOUSAND), at_best)
    p = places + EXTRA_PLACES
    return {"filled": fmt(filled), "vwap": show(vwap, p), "worst": _opt(worst), "slippage_bps": show(bps, p),
            "levels": levels, "partial": partial}


def summaries(merged_side_fn: Callable[[int], Iterable[Fill]], sizes: Sequence[Decimal],
              exact: Sequence[Decimal | None] = (None, None)) -> dict[str, Any]:
    """The streamed ``depletion`` field: for both sides and each size (base units), the compact
    :meth:`Depletion.summary` of a walk of the merged book -- the same numbers as
    ``deplete(levels, side, quantity=size).summary()`` (a property test holds them equal), from
    ONE walk per side for all sizes: this runs for every published snapshot.

    ``merged_side_fn(BID or ASK)`` returns that merged side best first; it is called once per side
    and consumed only as deep as the largest size needs. Shape::

        {"buy": {"1": {"filled": "1", "vwap": "67001.2", "worst": "67002", "slippage_bps":
                       "0.179104", "levels": 3, "partial": false}, "5": {...}},
         "sell": {...}}

    Size keys are :func:`fmt` of the size, in the order given. ``exact`` holds the merged book's
    exact-to price per side (BID, ASK; None = whole side known): a summary whose walk goes past
    it also carries ``"exact_to"`` and ``"beyond_known_depth": true`` (both keys are present on
    every summary). O(k log V + S) for k levels.
    """
    out: dict[str, Any] = {}
    for side in SIDES:
        bs = book_side(side)
        out[side] = side_summaries(side, merged_side_fn(bs), sizes, exact[bs])[0]
    return out


def side_summaries(side: str, levels: Iterable[Fill], sizes: Sequence[Decimal],
                   limit: Decimal | None = None) -> tuple[dict[str, Any], Decimal | None]:
    """One side of :func:`summaries`: the summaries of an order of ``side`` for each size (keys
    :func:`fmt` of the size, in the order given) from ONE walk of ``levels`` (the merged side it
    takes, best first, consumed only as deep as the largest size needs), ``limit`` that side's
    exact-to price. Also returns how deep the walk reached: the deepest ``worst`` price of the
    sizes, or None when a walk ran out of levels (a change to any level can then show). O(k + S)."""
    order = sorted(set(sizes))
    mul, add = EXACT.multiply, EXACT.add
    done: dict[Decimal, dict[str, Any]] = {}
    worsts: dict[Decimal, Decimal | None] = {}
    filled = cost = ZERO
    best = worst = None
    places = levels_n = 0
    k = 0
    for price, amount, _venue in levels:
        if amount <= 0:
            continue
        if best is None:
            best = price
        places = max(places, _decimals(price))
        levels_n += 1
        reach = add(filled, amount)
        while k < len(order) and reach >= order[k]:
            size = order[k]
            take = EXACT.subtract(size, filled)
            done[size] = _summary(side, size, add(cost, mul(price, take)), best, price, levels_n, places, False)
            worsts[size] = price
            k += 1
        if k == len(order):
            break
        filled, cost, worst = reach, add(cost, mul(price, amount)), price
    reached: Decimal | None = None
    for size in order[k:]:
        done[size] = _summary(side, filled, cost, best, worst, levels_n, places, True)
        worsts[size] = None
    if k == len(order) and order:
        reached = worsts[order[-1]]     # sizes ascending: the largest walked deepest
    shown = _opt(limit)
    for size, d in done.items():
        d["exact_to"] = shown
        d["beyond_known_depth"] = beyond(side, worst if d["partial"] else worsts[size], d["partial"], limit)
    return {fmt(size): done[size] for size in sizes}, reached
