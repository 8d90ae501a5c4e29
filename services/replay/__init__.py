"""Deterministic replay of feed captures through the real feed cores and the aggregator."""
