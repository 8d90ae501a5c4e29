"""The one port plan of bookmux: every TCP port a process of the shipped configurations binds,
on loopback or on a host. ``deploy/bookmux.toml`` and ``deploy/demo.toml`` follow it (a test holds
them to it); a new process takes its ports here first.

    50051        gRPC gateway (the original challenge's OrderbookAggregator, and bookmux.Books)
    50052        publisher: merged books to subscribers (ZeroMQ PUB)
    50053        aggregator: depletion queries (ROUTER)
    50054/50055  aggregator: merged books to the publisher (PUB) / republish requests (ROUTER)
    50056        publisher: the newest book per symbol on request (ROUTER, latest-only subscribers)
    50057-50059  aggregator shard 1 ([[aggregator.shards]]): pub / ctl / query; shard 0 takes the
                 aggregator's own 50053-50055
    50060-50079  feeds: each venue a pair (bus PUB, snapshot ROUTER), in the order below
    50080-50089  simulator: one port per simulated exchange (REST and WebSocket)
    50090        simulator: HTTP control interface
    50100-50102  metrics and health (HTTP): aggregator, publisher, gRPC gateway
    50103        metrics and health (HTTP) of aggregator shard 1 (shard 0 takes the aggregator's 50100)
    50110-50119  metrics and health (HTTP) of the feeds: each venue one, in the order below; shards
                 of a venue take further ports from the reserve at the end of the range
"""

from __future__ import annotations

GATEWAY_GRPC = 50051
PUBLISHER = 50052
AGGREGATOR_QUERY = 50053
AGGREGATOR_PUB = 50054
AGGREGATOR_CTL = 50055
PUBLISHER_LATEST = 50056
#: ``[[aggregator.shards]]`` index -> (pub, ctl, query): shard 0 is the aggregator's own ports.
AGGREGATOR_SHARDS: dict[int, tuple[int, int, int]] = {
    0: (AGGREGATOR_PUB, AGGREGATOR_CTL, AGGREGATOR_QUERY),
    1: (50057, 50058, 50059),
}

#: venue id -> (bus PUB, snapshot ROUTER) of its feed process (shards of a venue take further
#: pairs from the reserve at the end of the range).
FEEDS: dict[str, tuple[int, int]] = {
    "binance": (50060, 50061),
    "bitstamp": (50062, 50063),
    "binance_us": (50064, 50065),
    "kraken": (50066, 50067),
    "coinbase": (50068, 50069),
    "gemini": (50070, 50071),
}
FEED_RESERVE = range(50072, 50080)

#: simulated exchange (simulator venue id) -> its port.
SIMULATOR: dict[str, int] = {
    "binance": 50080,
    "bitstamp": 50081,
    "kraken": 50082,
    "coinbase": 50083,
    "gemini": 50084,
}
SIMULATOR_CONTROL = 50090

#: service -> its metrics and health port (``metrics = "127.0.0.1:PORT"`` in its table).
METRICS: dict[str, int] = {
    "aggregator": 50100,
    "publisher": 50101,
    "gateway_grpc": 50102,
}
#: ``[[aggregator.shards]]`` index -> its metrics and health port (shard 0: the aggregator's).
AGGREGATOR_SHARD_METRICS: dict[int, int] = {0: 50100, 1: 50103}
#: venue id -> the metrics and health port of its feed process.
FEED_METRICS: dict[str, int] = {
    "binance": 50110,
    "bitstamp": 50111,
    "binance_us": 50112,
    "kraken": 50113,
    "coinbase": 50114,
    "gemini": 50115,
}
FEED_METRICS_RESERVE = range(50116, 50120)
METRICS_RESERVE = range(50100, 50120)


def all_ports() -> dict[str, int]:
    """Every planned port by name (for the test that holds the configs to the plan)."""
    out = {"gateway_grpc": GATEWAY_GRPC, "publisher": PUBLISHER, "aggregator.query": AGGREGATOR_QUERY,
           "aggregator.pub": AGGREGATOR_PUB, "aggregator.ctl": AGGREGATOR_CTL,
           "publisher.latest": PUBLISHER_LATEST,
           "simulator.control": SIMULATOR_CONTROL}
    for i, (pub, ctl, query) in AGGREGATOR_SHARDS.items():
        if i:        # shard 0's ports are the aggregator's, named above
            out[f"aggregator.shards[{i}].query"] = query
            out[f"aggregator.shards[{i}].pub"] = pub
            out[f"aggregator.shards[{i}].ctl"] = ctl
            out[f"aggregator.shards[{i}].metrics"] = AGGREGATOR_SHARD_METRICS[i]
    for v, (pub, ctl) in FEEDS.items():
        out[f"venues.{v}.pub"] = pub
        out[f"venues.{v}.ctl"] = ctl
    for v, p in SIMULATOR.items():
        out[f"simulator.venues.{v}"] = p
    for name, p in METRICS.items():
        out[f"{name}.metrics"] = p
    for v, p in FEED_METRICS.items():
        out[f"venues.{v}.metrics"] = p
    return out
