"""The book type against a plain dict model, with check() after every step."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.book import ASK, BID, Book, BookError


def model_levels(model: dict[Decimal, Decimal], side: int) -> list[tuple[Decimal, Decimal]]:
    return sorted(model.items(), reverse=(side == BID))


def test_stress_against_dict_model() -> None:
    """10,000 random sets and deletes (many of unknown levels) keep book == dict model."""
    rng = random.Random(42)
    book = Book()
    models: dict[int, dict[Decimal, Decimal]] = {BID: {}, ASK: {}}
    prices = [Decimal(f"{43000 + i / 10:.1f}") for i in range(-300, 300)]
    for step in range(10_000):
        side = rng.choice((BID, ASK))
        price = rng.choice(prices)
        qty = Decimal(0) if rng.random() < 0.35 else Decimal(rng.randint(1, 10**8)) / Decimal(10**8)
        book.apply(side, price, qty)
        if qty:
            models[side][price] = qty
        else:
            models[side].pop(price, None)
        book.check()
        if step % 97 == 0:
            for s in (BID, ASK):
                assert book.levels(s) == model_levels(models[s], s)
                assert book.levels(s, 5) == model_levels(models[s], s)[:5]
            bid, ask = book.best()
            assert bid == (model_levels(models[BID], BID)[:1] or [None])[0]
            assert ask == (model_levels(models[ASK], ASK)[:1] or [None])[0]
    assert len(book) == len(models[BID]) + len(models[ASK])


def test_equal_values_meet_at_one_level() -> None:
    """'1.0' and '1.00' are one price level, as venues pad differently."""
    book = Book()
    book.apply(BID, Decimal("1.0"), Decimal("2"))
    book.apply(BID, Decimal("1.00"), Decimal("3"))
    assert book.levels(BID) == [(Decimal("1"), Decimal("3"))]
    book.apply(BID, Decimal("1.000"), Decimal("0.00000000"))
    assert len(book) == 0


def test_load_replaces_and_skips_zeros() -> None:
    book = Book()
    book.apply(ASK, Decimal("5"), Decimal("1"))
    book.load([(Decimal("1"), Decimal("1")), (Decimal("2"), Decimal("0"))], [(Decimal("3"), Decimal("4"))])
    assert book.levels(BID) == [(Decimal("1"), Decimal("1"))]
    assert book.levels(ASK) == [(Decimal("3"), Decimal("4"))]
    assert not book.crossed()
    book.apply(BID, Decimal("3"), Decimal("1"))
    assert book.crossed()


@pytest.mark.parametrize("bad", [(Decimal("-1"), Decimal("1")), (Decimal("1"), Decimal("-2")),
                                 (Decimal("NaN"), Decimal("1")), (1.5, Decimal("1"))])
def test_check_catches_broken_invariants(bad) -> None:
    book = Book()
    book.bids[bad[0]] = bad[1]
    with pytest.raises(BookError):
        book.check()


@given(st.lists(st.tuples(st.sampled_from((BID, ASK)), st.integers(1, 50), st.integers(0, 5)), max_size=200))
def test_apply_levels_equals_sequential_apply(ops) -> None:
    a, b = Book(), Book()
    for side, p, q in ops:
        a.apply(side, Decimal(p), Decimal(q))
    b.apply_levels([(Decimal(p), Decimal(q)) for s, p, q in ops if s == BID],
                   [(Decimal(p), Decimal(q)) for s, p, q in ops if s == ASK])
    assert a.levels(BID) == b.levels(BID) and a.levels(ASK) == b.levels(ASK)
    a.check()
