"""Binance spot (and Binance.US, same protocol) diff-depth feed: pure parsing, the documented
sync rule, and a spec for the shared runner in :mod:`common.feed`."""
