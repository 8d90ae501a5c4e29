"""The benchmark subscriber's hold measure: which venues' own books changed between two snapshots."""

from __future__ import annotations

from bench.subscriber import changed_venues


def test_a_changed_amount_names_its_venue() -> None:
    """A level whose amount changed, above both worst prices, names its venue only."""
    prev = {"bids": [["10", "1", "a"], ["9", "1", "b"], ["8", "1", "a"]], "asks": [["11", "1", "b"]]}
    cur = {"bids": [["10", "2", "a"], ["9", "1", "b"], ["8", "1", "a"]], "asks": [["11", "1", "b"]]}
    assert changed_venues(prev, cur) == {"a"}


def test_a_level_pushed_out_by_another_venue_does_not_count() -> None:
    """A better level of one venue pushing another's worst level out names only the first."""
    prev = {"bids": [["10", "1", "a"], ["9", "1", "b"]], "asks": [["12", "1", "a"], ["13", "1", "b"]]}
    cur = {"bids": [["10", "1", "a"], ["9.5", "1", "c"]], "asks": [["11", "1", "c"], ["12", "1", "a"]]}
    assert changed_venues(prev, cur) == {"c"}


def test_same_book_no_change() -> None:
    """Identical snapshots name no venue."""
    m = {"bids": [["10", "1", "a"], ["9", "1", "b"]], "asks": [["11", "1", "a"], ["12", "1", "b"]]}
    assert changed_venues(m, dict(m)) == set()
