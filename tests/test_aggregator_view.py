"""The aggregator's incremental merged view against a full rebuild (merge.top and
depletion.summaries of the same books), in process."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest

from common.book import ASK, BID, Book
from common.config import DustRule
from common.numbers import fmt
from services.aggregator import depletion, merge
from services.aggregator.view import MergedView, top, venue_top

DUST = {"alpha": DustRule(D("0.001"), D("1")), "beta": DustRule(), "gamma": DustRule(D("0.01"))}
SIZES = [D(1), D(3), D("7.5")]


def book(bids: dict[str, str], asks: dict[str, str]) -> Book:
    b = Book()
    b.load([(D(p), D(q)) for p, q in bids.items()], [(D(p), D(q)) for p, q in asks.items()])
    return b


def full(books: dict[str, Book], n: int, exact: tuple[D | None, D | None]) -> tuple[object, ...]:
    """Everything the view publishes, rebuilt from scratch the old way."""
    depl = depletion.summaries(lambda side: merge.merged_iter(books, side, DUST), SIZES, exact)
    return merge.top(books, BID, DUST, n), merge.top(books, ASK, DUST, n), depl


def test_venue_top_skips_dust_and_stops_at_n() -> None:
    """A venue's best n: dust (by amount or notional) skipped, best first, tagged with the venue."""
    b = book({"100": "0.0001", "99": "2", "98": "0.005", "97": "1", "96": "4"}, {"101": "1"})
    assert venue_top(b, BID, 2, "alpha", DUST["alpha"]) == [(D(99), D(2), "alpha"), (D(97), D(1), "alpha")]
    assert venue_top(b, ASK, 5, "alpha", DUST["alpha"]) == [(D(101), D(1), "alpha")]


def test_top_orders_ties_by_amount_then_venue() -> None:
    """At equal price the larger amount first, then the venue id; as merge.top."""
    books = {"gamma": book({"100": "2", "99": "1"}, {}), "beta": book({"100": "2", "98": "5"}, {}),
             "alpha": book({"100": "3", "99": "1"}, {})}
    want = [(D(100), D(3), "alpha"), (D(100), D(2), "beta"), (D(100), D(2), "gamma"), (D(99), D(1), "alpha")]
    assert top(books, BID, DUST, 4) == want == merge.top(books, BID, DUST, 4)


def test_refresh_publishes_wire_text_and_reports_change() -> None:
    """The first refresh builds both sides and their canonical text; an unchanged refresh says
    nothing changed."""
    books = {"alpha": book({"100.50": "1.250"}, {"101": "2"}), "beta": book({"100.5": "2"}, {"102.00": "3"})}
    v = MergedView(5, DUST, SIZES)
    assert v.refresh(books, (None, None))
    assert v.wire[BID] == [["100.5", "2", "beta"], ["100.5", "1.25", "alpha"]]
    assert v.wire[ASK] == [["101", "2", "alpha"], ["102", "3", "beta"]]
    assert v.spread() == D("0.5")
    assert not v.refresh(books, (None, None))


def test_delta_beyond_both_floors_is_invisible() -> None:
    """With N levels and the depletion walks shallower, a bid strictly below the N-th bid changes
    nothing; one at the floor price counts."""
    bids = {str(100 - i): "10" for i in range(10)}
    books = {"alpha": book(bids, {"101": "10"})}
    v = MergedView(5, DUST, SIZES)
    v.refresh(books, (None, None))
    assert v.floor == [D(96), None]         # asks: fewer than N levels: any ask counts
    books["alpha"].apply_levels([(D(95), D(1))], [])
    assert not v.note("alpha", [(D(95), D(1))], [])
    assert v.note("alpha", [(D(96), D(1))], [])
    assert v.note("alpha", [], [(D(200), D(1))])


def check_parts(v: MergedView, books: dict[str, Book]) -> None:
    """Every venue part the view keeps (patched by the deltas) is the venue's best levels as a
    rebuild from its book gives them: all of them when complete, else a prefix; keys match."""
    for side in (BID, ASK):
        for cache in (v._venue[side], v._deep[side]):
            for name, part in cache.items():
                want = venue_top(books[name], side, part.cap, name, DUST[name])
                assert part.levels == (want if part.complete else want[:len(part.levels)]), (side, name)
                assert part.keys == [-p if side == BID else p for p, _, _ in part.levels]


def test_patched_part_shrinks_below_n_and_is_topped_up_from_the_book() -> None:
    """Removals inside a venue's cached top leave it short; the next refresh tops it up from the
    book beyond its last price (dust skipped), equal to a rebuild."""
    bids = {str(100 - i): "1" for i in range(30)}
    bids["85"] = "0.0001"                   # dust for alpha (by amount)
    books = {"alpha": book(bids, {"101": "1"}), "beta": book({"90": "2"}, {"102": "1"})}
    v = MergedView(3, DUST)
    v.refresh(books, (None, None))
    gone = [(D(100 - i), D(0)) for i in range(5)] + [(D("99.5"), D("0.0002"))]
    books["alpha"].apply_levels(gone, [])
    assert v.note("alpha", gone, [])
    assert len(v._venue[BID]["alpha"].levels) == 1 and not v._venue[BID]["alpha"].complete
    check_parts(v, books)
    assert v.refresh(books, (None, None))
    assert v.top[BID] == merge.top(books, BID, DUST, 3) == [(D(95), D(1), "alpha"), (D(94), D(1), "alpha"),
                                                              (D(93), D(1), "alpha")]
    check_parts(v, books)
    # Emptied altogether: rebuilt from the book's best.
    gone = [(D(p), D(0)) for p in range(71, 101)]
    books["alpha"].apply_levels(gone, [])
    v.note("alpha", gone, [])
    v.refresh(books, (None, None))
    assert v.top[BID] == [(D(90), D(2), "beta")]
    check_parts(v, books)


@pytest.mark.parametrize(("seed", "spread", "removals", "loaded", "depth", "n", "refresh_p"),
                         [(7, 60, 0.3, 20, None, 5, 0.5), (8, 12, 0.5, 3, None, 5, 0.5), (9, 8, 0.6, 6, None, 5, 0.5),
                          (10, 60, 0.3, 20, 2, 5, 0.5), (11, 6, 0.6, 2, 2, 5, 0.5), (12, 10, 0.45, 30, None, 3, 0.5),
                          (13, 14, 0.5, 25, 3, 2, 0.5), (14, 9, 0.4, 40, None, 1, 0.5), (15, 30, 0.55, 12, 4, 8, 0.5),
                          (16, 30, 0.3, 20, None, 5, 0.03), (17, 10, 0.5, 8, 2, 3, 0.02)])
def test_incremental_view_equals_a_full_rebuild_under_random_deltas(seed: int, spread: int, removals: float,
                                                                    loaded: int, depth: int | None, n: int,
                                                                    refresh_p: float) -> None:
    """3 venues, dust, ties, depletion sizes, exact-to changes, books replaced and venues
    leaving and returning, deep and shallow books, deltas inside and at the edge of the cached
    venue parts and removals that leave them short: after every step the view equals merge.top
    and depletion.summaries recomputed from scratch, refresh reports a change exactly when they
    changed, and every cached venue part equals a rebuild. ``depth``: the depletion walks start
    from that many levels per venue and keep it (2: they often need more and are done again on
    the whole side); ``n``: levels per side; ``refresh_p``: the chance of a refresh after each step
    (0.02-0.03: bursts of deltas between refreshes, past a part's PATCH_BUDGET, so parts are
    dropped and rebuilt)."""
    rng = random.Random(seed)
    venues = ["alpha", "beta", "gamma"]
    books = {v: Book() for v in venues}
    v = MergedView(n, DUST, SIZES, depth=depth, grow=depth is None)

    def level(side: int) -> tuple[D, D]:
        off = rng.choice([rng.randint(1, 6), rng.randint(1, spread)])
        p = D(4000 - off) / 4 if side == BID else D(4000 + off) / 4
        r = rng.random()
        q = D(0) if r < removals else D("0.0005") if r < removals + 0.05 else D(rng.randint(1, 300)) / 100
        return p, q

    last = None
    live = set(venues)
    exact: tuple[D | None, D | None] = (None, None)
    for step in range(3000):
        name = rng.choice(venues)
        r = rng.random()
        if r < 0.02:
            books[name].load([level(BID) for _ in range(loaded)], [level(ASK) for _ in range(loaded)])
            v.invalidate()
        elif r < 0.04:
            live ^= {name}
        elif r < 0.05:
            exact = rng.choice([(None, None), (D(990), D(1010)), (D("999.5"), None)])
        else:
            bids = [level(BID) for _ in range(rng.choice([1, 1, 2, 4]))]
            asks = [level(ASK) for _ in range(rng.choice([0, 1, 2]))]
            best_ask = books[name].best()[1]
            bids = [(p, q) for p, q in bids if best_ask is None or p < best_ask[0]]
            best_bid = books[name].best()[0]
            asks = [(p, q) for p, q in asks if best_bid is None or p > best_bid[0]]
            books[name].apply_levels(bids, asks)
            v.note(name, bids, asks)
            check_parts(v, books)
        if rng.random() < refresh_p:
            shown = {k: books[k] for k in venues if k in live}
            changed = v.refresh(shown, exact)
            want = full(shown, n, exact)
            got = (v.top[BID], v.top[ASK], v.depletion())
            assert got == want, step
            assert v.wire[BID] == [[fmt(p), fmt(a), x] for p, a, x in want[0]]
            assert changed == (want != last), step
            check_parts(v, shown)
            last = want
