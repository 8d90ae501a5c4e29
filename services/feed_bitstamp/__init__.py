"""Bitstamp ``diff_order_book`` feed: pure parsing, the microtimestamp sync rule, and a spec for
the shared runner in :mod:`common.feed`."""
