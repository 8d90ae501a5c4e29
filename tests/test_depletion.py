"""The depletion engine: exact examples, the rounding rule, and properties against a brute-force
Decimal reference (no sockets)."""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from decimal import Decimal as D

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.book import ASK, BID
from common.numbers import DIV_CONTEXT, fmt
from services.aggregator.depletion import (
    Depletion,
    book_side,
    decimals,
    deplete,
    show,
    summaries,
)
from services.aggregator.merge import merge_levels

# --- a brute-force reference -------------------------------------------------------------------

#: Plenty of precision: every product and sum of the test numbers is exact in it (the default
#: context's 28 digits are not: a naive reference rounds where the engine must not).
BIG = decimal.Context(prec=200, traps=[decimal.Inexact])


def exact_sum(xs: Iterator[D] | list[D]) -> D:
    with decimal.localcontext(BIG):
        return sum(xs, D(0))


def ref_levels(books: dict[str, list[tuple[D, D]]], side: str) -> list[tuple[D, D, str]]:
    """Every level of every venue, sorted best first by a plain sort (not a heap merge)."""
    flat = [(p, a, v) for v, lv in books.items() for p, a in lv]
    if side == "buy":
        return sorted(flat, key=lambda x: (x[0], -x[1], x[2]))
    return sorted(flat, key=lambda x: (-x[0], -x[1], x[2]))


def ref_quantity(levels: list[tuple[D, D, str]], q: D) -> dict[str, object]:
    """Take from each level ``clamp(q - everything before it, 0, amount)``: no loop-exit logic."""
    with decimal.localcontext(BIG):
        return _ref_quantity(levels, q)


def _ref_quantity(levels: list[tuple[D, D, str]], q: D) -> dict[str, object]:
    takes = []
    for i, (p, a, v) in enumerate(levels):
        before = sum((lv[1] for lv in levels[:i]), D(0))
        take = max(D(0), min(a, BIG.subtract(q, before)))
        if take:
            takes.append((p, take, v))
    filled = sum((t for _, t, _ in takes), D(0))
    cost = sum((BIG.multiply(p, t) for p, t, _ in takes), D(0))
    total = sum((a for _, a, _ in levels), D(0))
    return {"fills": takes, "filled": filled, "cost": cost, "partial": total < q}


def ref_notional(levels: list[tuple[D, D, str]], n: D) -> dict[str, object]:
    """Whole levels while the running cost stays within ``n``, then ``(n - cost) / price``
    truncated to 28 digits from the next one."""
    with decimal.localcontext(BIG):
        return _ref_notional(levels, n)


def _ref_notional(levels: list[tuple[D, D, str]], n: D) -> dict[str, object]:
    prefix = [D(0)]
    for p, a, _ in levels:
        prefix.append(BIG.add(prefix[-1], BIG.multiply(p, a)))
    j = max(i for i in range(len(prefix)) if prefix[i] <= n)   # whole levels that fit
    takes = [(p, a, v) for p, a, v in levels[:j]]
    if j < len(levels) and prefix[j] < n:
        p, _, v = levels[j]
        down = decimal.Context(prec=28, rounding=decimal.ROUND_DOWN)
        takes.append((p, down.divide(n - prefix[j], p), v))
    filled = sum((t for _, t, _ in takes), D(0))
    cost = sum((BIG.multiply(p, t) for p, t, _ in takes), D(0))
    return {"fills": takes, "filled": filled, "cost": cost, "partial": prefix[-1] < n}


# --- strategies --------------------------------------------------------------------------------

prices = st.builds(lambda i, k: D(i).scaleb(-k), st.integers(1, 5000), st.integers(0, 3))
amounts = st.builds(lambda i, k: D(i).scaleb(-k), st.integers(1, 10**6), st.integers(0, 8))


@st.composite
def venue_side(draw: st.DrawFn, side: str) -> list[tuple[D, D]]:
    ps = draw(st.lists(prices, max_size=12, unique=True))
    return sorted(((p, draw(amounts)) for p in ps), key=lambda x: x[0], reverse=(side == "sell"))


@st.composite
def books(draw: st.DrawFn, side: str) -> dict[str, list[tuple[D, D]]]:
    names = draw(st.lists(st.sampled_from(["alpha", "beta", "gamma"]), min_size=1, max_size=3, unique=True))
    return {v: draw(venue_side(side)) for v in names}


sides = st.sampled_from(["buy", "sell"])
sizes = st.builds(lambda i, k: D(i).scaleb(-k), st.integers(1, 10**7), st.integers(0, 6))


def merged(bk: dict[str, list[tuple[D, D]]], side: str) -> Iterator[tuple[D, D, str]]:
    return merge_levels(bk, book_side(side))


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_quantity_matches_reference(data: st.DataObject) -> None:
    """By quantity, the walk of a random merged book equals the brute-force reference exactly."""
    side = data.draw(sides)
    bk = data.draw(books(side))
    q = data.draw(sizes)
    d = deplete(merged(bk, side), side, quantity=q)
    ref = ref_quantity(ref_levels(bk, side), q)
    assert list(d.fills) == ref["fills"]
    assert d.filled == ref["filled"] and d.notional == ref["cost"]
    assert d.partial == ref["partial"]
    assert d.levels == len(ref["fills"])
    assert d.filled <= q
    assert exact_sum(a for _, a, _ in d.fills) == d.filled
    assert d.filled == q or d.partial
    if d.filled:
        assert d.vwap == DIV_CONTEXT.divide(d.notional, d.filled)
        assert d.worst == d.fills[-1][0] and d.best == ref_levels(bk, side)[0][0]
        assert d.slippage is not None and d.slippage >= 0
    else:
        assert d.vwap is None and d.slippage_bps is None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_notional_matches_reference(data: st.DataObject) -> None:
    """By notional, the walk equals the reference and never spends more than asked."""
    side = data.draw(sides)
    bk = data.draw(books(side))
    n = data.draw(sizes)
    d = deplete(merged(bk, side), side, notional=n)
    ref = ref_notional(ref_levels(bk, side), n)
    assert list(d.fills) == ref["fills"]
    assert d.filled == ref["filled"] and d.notional == ref["cost"]
    assert d.partial == ref["partial"]
    assert d.notional <= n
    assert exact_sum(a for _, a, _ in d.fills) == d.filled


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_merged_never_worse_than_best_single_venue(data: st.DataObject) -> None:
    """Without fees or dust a merged buy costs no more than the cheapest venue that fills it alone,
    and a merged sell yields no less than the best one."""
    side = data.draw(sides)
    bk = data.draw(books(side))
    q = data.draw(sizes)
    m = deplete(merged(bk, side), side, quantity=q)
    alone = [deplete(((p, a, v) for p, a in lv), side, quantity=q) for v, lv in bk.items()]
    full = [d.notional for d in alone if not d.partial]
    if full:
        assert not m.partial
        if side == "buy":
            assert m.notional <= min(full)
        else:
            assert m.notional >= max(full)
    # and for any venue, the merged walk fills at least as much
    assert all(m.filled >= d.filled for d in alone)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fees_and_wire(data: st.DataObject) -> None:
    """Fees add up per fill; the wire form is msgpack-able canonical text with no exponent."""
    side = data.draw(sides)
    bk = data.draw(books(side))
    q = data.draw(sizes)
    rates = {v: D(data.draw(st.integers(0, 50))).scaleb(-4) for v in bk}
    d = deplete(merged(bk, side), side, quantity=q, fees=rates)
    with decimal.localcontext(BIG):
        fee = sum((p * a * rates[v] for p, a, v in d.fills), D(0))
    assert d.fee == fee
    assert exact_sum(s.fee for s in d.venues.values() if s.fee is not None) == fee
    assert exact_sum(s.filled for s in d.venues.values()) == d.filled
    if d.filled:
        net = BIG.add(d.notional, fee) if side == "buy" else BIG.subtract(d.notional, fee)
        assert d.vwap_fee == DIV_CONTEXT.divide(net, d.filled)
    w = d.to_wire()
    assert msgpack.unpackb(msgpack.packb(w)) == w
    texts = [w["filled"], w["notional"], w["vwap"], w["slippage_bps"], w["fee"]] + [x for f in w["fills"]
                                                                                 for x in f[:2]]
    assert all(t is None or ("E" not in t and "e" not in t) for t in texts)


# --- exact examples ----------------------------------------------------------------------------

ASKS = [(D("100.5"), D("1"), "a"), (D("101"), D("2"), "b"), (D("102.25"), D("5"), "a")]
BIDS = [(D("99.5"), D("1"), "b"), (D("99"), D("3"), "a"), (D("98"), D("10"), "b")]


def test_buy_example() -> None:
    """Buying 2.5 takes 1 @ 100.5 then 1.5 @ 101: VWAP 100.8, slippage 0.3 = 29.85075 bps."""
    d = deplete(iter(ASKS), "buy", quantity=D("2.5"))
    assert d.fills == ((D("100.5"), D("1"), "a"), (D("101"), D("1.5"), "b"))
    assert (d.filled, d.notional, d.levels, d.partial) == (D("2.5"), D("252"), 2, False)
    assert (d.best, d.worst, d.vwap, d.slippage) == (D("100.5"), D("101"), D("100.8"), D("0.3"))
    w = d.to_wire()
    assert w["slippage_bps"] == "29.85075"   # 29.850746268... shown with 1 + 4 decimals
    assert w["venues"] == {
        "a": {"filled": "1", "notional": "100.5", "levels": 1, "vwap": "100.5", "worst": "100.5",
              "fee": None},
        "b": {"filled": "1.5", "notional": "151.5", "levels": 1, "vwap": "101", "worst": "101",
              "fee": None},
    }
    assert w["fee"] is None and w["vwap_fee"] is None and w["mode"] == "quantity"


def test_sell_example_with_fees() -> None:
    """Selling 3 takes bids 1 @ 99.5 and 2 @ 99; slippage is best - VWAP; fees reduce proceeds."""
    d = deplete(iter(BIDS), "sell", quantity=D("3"), fees={"a": D("0.001"), "b": D("0.004")})
    assert d.notional == D("297.5") and d.vwap == DIV_CONTEXT.divide(D("297.5"), D(3))
    assert d.fee == D("99.5") * D("0.004") + D("198") * D("0.001")   # 0.398 + 0.198
    assert d.fee == D("0.596")
    assert d.slippage == DIV_CONTEXT.divide(D("99.5") * 3 - D("297.5"), D(3))
    w = d.to_wire()
    assert w["vwap"] == "99.16667" and w["slippage"] == "0.33333"
    assert w["vwap_fee"] == "98.968"   # (297.5 - 0.596) / 3, exact
    assert w["slippage_bps"] == "33.50084"   # 0.3333.../99.5*1e4 = 33.500837...


def test_partial_fill_says_so() -> None:
    """More than the book holds: everything is taken and ``partial`` is set, no error."""
    d = deplete(iter(ASKS), "buy", quantity=D("100"))
    assert d.partial and d.filled == D("8") and d.levels == 3 and d.worst == D("102.25")
    assert d.to_wire()["partial"] is True


def test_exact_fill_at_last_level_is_not_partial() -> None:
    d = deplete(iter(ASKS), "buy", quantity=D("8"))
    assert not d.partial and d.filled == D("8")
    n = deplete(iter(ASKS), "buy", notional=D("100.5") + D("202") + D("511.25"))
    assert not n.partial and n.filled == D("8")


def test_empty_book() -> None:
    """An empty side: nothing filled, every average undefined (None on the wire)."""
    d = deplete(iter(()), "sell", quantity=D("1"), fees={})
    w = d.to_wire()
    assert d.partial and d.filled == 0 and d.levels == 0
    assert [w[k] for k in ("best", "worst", "vwap", "slippage", "slippage_bps", "vwap_fee")] == [None] * 6
    assert w["fee"] == "0" and w["fills"] == [] and w["venues"] == {}


def test_notional_example() -> None:
    """Spending 300 takes level 1 whole (100.5) and 199.5 / 101 of level 2, truncated to 28 digits."""
    d = deplete(iter(ASKS), "buy", notional=D("300"))
    part = decimal.Context(prec=28, rounding=decimal.ROUND_DOWN).divide(D("199.5"), D("101"))
    assert d.fills == ((D("100.5"), D("1"), "a"), (D("101"), part, "b"))
    assert str(part) == "1.975247524752475247524752475"
    assert d.notional <= 300 and 300 - d.notional < D("1e-25")
    assert d.mode == "notional" and d.requested == 300 and not d.partial


def test_walk_is_lazy() -> None:
    """The walk stops at the level that completes the order and never pulls another."""
    def levels() -> Iterator[tuple[D, D, str]]:
        yield D("10"), D("1"), "a"
        yield D("11"), D("1"), "a"
        raise AssertionError("consumed too far")

    assert deplete(levels(), "buy", quantity=D("2")).filled == 2


def test_zero_amount_levels_are_skipped() -> None:
    d = deplete(iter([(D("10"), D("0"), "a"), (D("11"), D("1"), "a")]), "buy", quantity=D("1"))
    assert d.best == D("11") and d.levels == 1


def test_rounding_rule_half_even_at_places_plus_four() -> None:
    """VWAP of integer prices is shown with 4 decimals, half-even: 1.00005 -> 1, 1.00015 -> 1.0002."""
    tie_down = deplete(iter([(D("1"), D("19999"), "a"), (D("2"), D("1"), "a")]), "buy", quantity=D("20000"))
    assert tie_down.vwap == D("1.00005") and tie_down.to_wire()["vwap"] == "1"
    assert tie_down.to_wire()["slippage_bps"] == "0.5"
    tie_up = deplete(iter([(D("1"), D("19997"), "a"), (D("2"), D("3"), "a")]), "buy", quantity=D("20000"))
    assert tie_up.to_wire()["vwap"] == "1.0002"
    # prices with 2 decimals (trailing zeros ignored) -> 6 decimals shown
    d = deplete(iter([(D("10.010"), D("1"), "a"), (D("10.02"), D("2"), "a")]), "buy", quantity=D("3"))
    assert d.places == 2 and d.to_wire()["vwap"] == "10.016667"


def test_show_and_decimals() -> None:
    assert decimals(D("67000.10")) == 1 and decimals(D("1E+2")) == 0 and decimals(D("0.00012300")) == 6
    assert show(D("2.5"), 0) == "2" and show(D("3.5"), 0) == "4" and show(D("1.23"), 6) == "1.23"
    assert show(None, 3) is None


def test_sums_are_exact_with_many_digits() -> None:
    """Products wider than 28 digits stay exact (the default context would round them)."""
    p, a = D("67000.12345678"), D("999999999999.12345678")
    d = deplete(iter([(p, a, "a")]), "sell", quantity=a)
    assert d.notional == BIG.multiply(p, a)
    assert len(d.notional.as_tuple().digits) > 28


@pytest.mark.parametrize("kwargs", [
    {}, {"quantity": D(1), "notional": D(1)}, {"quantity": D(0)}, {"quantity": D(-1)},
    {"notional": D("NaN")}, {"quantity": 1},
])
def test_bad_targets(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        deplete(iter(ASKS), "buy", **kwargs)  # type: ignore[arg-type]


def test_bad_side_and_price() -> None:
    with pytest.raises(ValueError, match="side"):
        deplete(iter(ASKS), "hold", quantity=D(1))
    with pytest.raises(ValueError, match="price"):
        deplete(iter([(D(0), D(1), "a")]), "buy", quantity=D(1))


def test_merge_order() -> None:
    """Bids highest first, asks lowest first; at equal price the larger amount first."""
    bk = {"b": [(D("10"), D("1")), (D("12"), D("1"))], "a": [(D("10"), D("2")), (D("11"), D("1"))]}
    assert list(merge_levels(bk, ASK)) == [(D("10"), D("2"), "a"), (D("10"), D("1"), "b"), (D("11"), D("1"), "a"),
                                    (D("12"), D("1"), "b")]
    bids = {"a": [(D("11"), D("1"))], "b": [(D("12"), D("1"))]}
    assert [p for p, _, _ in merge_levels(bids, BID)] == [D("12"), D("11")]


def test_summaries_shape_and_one_walk_per_side() -> None:
    """The streamed field: per side, per size (fmt text keys) the compact summary; the merged side
    is requested once per side and read only as far as the largest size needs."""
    calls: list[int] = []
    pulled: list[int] = []

    def side_fn(side: int) -> Iterator[tuple[D, D, str]]:
        calls.append(side)
        for lv in ASKS if side == ASK else BIDS:
            pulled.append(side)
            yield lv

    out = summaries(side_fn, [D("1"), D("2.50"), D("15")])
    assert sorted(calls) == [BID, ASK]
    assert list(out) == ["buy", "sell"] and list(out["buy"]) == ["1", "2.5", "15"]
    assert out["buy"]["2.5"] == {"filled": "2.5", "vwap": "100.8", "worst": "101",
                                 "slippage_bps": "29.85075", "levels": 2, "partial": False,
                                 "exact_to": None, "beyond_known_depth": False}
    assert out["buy"]["15"]["partial"] is True and out["buy"]["15"]["filled"] == "8"
    assert out["sell"]["1"] == {"filled": "1", "vwap": "99.5", "worst": "99.5", "slippage_bps": "0",
                                "levels": 1, "partial": False, "exact_to": None, "beyond_known_depth": False}
    assert pulled.count(ASK) == 3 and pulled.count(BID) == 3
    small = summaries(side_fn, [D("1")])
    assert small["buy"]["1"]["levels"] == 1
    assert pulled.count(ASK) == 4   # one more level: the walk for size 1 stopped at the first


def test_depletion_is_frozen() -> None:
    d = deplete(iter(ASKS), "buy", quantity=D(1))
    assert isinstance(d, Depletion)
    with pytest.raises(AttributeError):
        d.filled = D(2)  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 400), st.integers(0, 60), st.sampled_from("abc")), max_size=40),
       st.lists(st.integers(1, 300), min_size=1, max_size=4),
       st.tuples(st.none() | st.integers(1, 400), st.none() | st.integers(1, 400)))
def test_streamed_summaries_equal_the_full_engine(raw, sizes_raw, exact_raw) -> None:
    """One cumulative walk per side for all sizes gives exactly deplete(...).summary() per size,
    the known-depth keys included."""
    exact = tuple(None if e is None else D(e) / 10 for e in exact_raw)
    levels = sorted(((D(p) / 10, D(a) / 4, v) for p, a, v in raw), key=lambda lv: (lv[0], -lv[1], lv[2]))
    bids = sorted(levels, key=lambda lv: (-lv[0], -lv[1], lv[2]))
    sizes = [D(s) / 8 for s in sizes_raw]

    def side_fn(side: int):
        return iter(levels if side == ASK else bids)

    out = summaries(side_fn, sizes, exact)
    for side, src, limit in (("buy", levels, exact[ASK]), ("sell", bids, exact[BID])):
        for size in sizes:
            assert out[side][fmt(size)] == deplete(iter(src), side, quantity=size).summary(limit), (side, size)
