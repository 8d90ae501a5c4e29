"""Reconnect delays: a pure, capped, jittered exponential generator."""

from __future__ import annotations

import random
from itertools import islice

import pytest

from common.feed import rest
from common.feed.backoff import backoff


def test_without_jitter_the_delays_double_up_to_the_cap() -> None:
    """0.5, 1, 2, 4, 8, 16, then 30 forever."""
    assert list(islice(backoff(initial=0.5, factor=2, cap=30, jitter=0), 9)) == \
        [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_seeded_jitter_gives_this_exact_sequence() -> None:
    """Each delay is base * (1 - jitter * r) with r from the seeded RNG, r in [0, 1)."""
    got = [round(d, 9) for d in islice(backoff(initial=1, factor=2, cap=8, jitter=0.5,
                                               rng=random.Random(42)), 6)]
    assert got == [0.680286601, 1.974989245, 3.449941363, 7.107157047, 5.054115143, 5.29320205]
    for d, base in zip(got, [1, 2, 4, 8, 8, 8]):
        assert base * 0.5 < d <= base


def test_full_jitter_never_exceeds_the_cap() -> None:
    assert all(0 < d <= 3 for d in islice(backoff(initial=0.1, cap=3, jitter=1, rng=random.Random(1)), 200))


@pytest.mark.parametrize("kw", [dict(initial=0), dict(factor=0.5), dict(initial=5, cap=1), dict(jitter=2)])
def test_bad_parameters_are_rejected(kw: dict) -> None:
    with pytest.raises(ValueError):
        next(backoff(**kw))


def test_rate_limit_answers() -> None:
    """429 honours Retry-After; 418 (ban) waits at least 2 minutes; junk headers fall back."""
    assert rest.retry_after(429, "7") == 7.0
    assert rest.retry_after(429, None) == rest.RATE_LIMIT_DEFAULT_DELAY
    assert rest.retry_after(429, "soon") == rest.RATE_LIMIT_DEFAULT_DELAY
    assert rest.retry_after(418, "30") == 120.0
    assert rest.retry_after(418, "600") == 600.0
