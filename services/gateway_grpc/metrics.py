"""Metrics and health of the gRPC gateway (common/metrics.py serves them on ``gateway_grpc.metrics``).

Nothing is counted here: at scrape time :func:`collect` reads the gateway's counters, its hub
(books received, clients per symbol) and its open streams.

Readiness (``/readyz``): the gateway holds a book of every configured symbol (received from the
publisher since it started), so a new stream of any symbol gets a book at once. A publisher
that goes silent does not make it unready (the publisher's own ``/readyz`` says whether books
flow). Liveness (``/healthz``): the asyncio loop ran its ticker task within ``STALL_AFTER`` s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from common import metrics
from common.metrics import Health, Metric, MetricsServer, Readiness
from services.gateway_grpc.server import Gateway


def collect(gw: Gateway) -> Iterator[Metric]:
    """The gateway's metric families (server thread: read only)."""
    c = dict(gw.counters)
    streams = list(gw.open)
    open_by: dict[tuple[str, str], int] = {}
    for st in streams:
        key = (st.method.rsplit("/", 1)[-1], st.symbol)
        open_by[key] = open_by.get(key, 0) + 1
    skipped = c.get("skipped_for_slow_clients", 0) + sum(st.box.skipped for st in streams)
    yield metrics.counter("bookmux_gateway_books_received", "Merged books received from the publisher", [],
                          [([], gw.hub.published)])
    yield metrics.gauge("bookmux_gateway_streams", "Open gRPC streams, by method and symbol", ["method", "symbol"],
                        (([m, s], n) for (m, s), n in sorted(open_by.items())))
    yield metrics.counter("bookmux_gateway_streams_opened", "gRPC streams opened", [],
                          [([], c.get("streams_opened", 0))])
    yield metrics.counter("bookmux_gateway_streams_refused", "gRPC streams refused (max_clients open)", [],
                          [([], c.get("refused_full", 0))])
    yield metrics.counter("bookmux_gateway_books_skipped", "Books a slow client never got (a newer one replaced "
                          "it in its one-slot mailbox)", [], [([], skipped)])
    yield metrics.counter("bookmux_gateway_upstream_missed", "Snapshots lost before the gateway (seq jumps)", [],
                          [([], c.get("upstream_missed", 0))])
    yield metrics.counter("bookmux_gateway_drops", "Input dropped (counted, logged), by reason", ["reason"],
                          [(["malformed"], c.get("malformed", 0)),
                           (["write_to_gone_peer"], c.get("writes_to_a_gone_peer", 0))])
    yield metrics.events("bookmux_gateway_events", "Every counter of the gateway by name", [], [], c)


def readiness(gw: Gateway) -> Readiness:
    """None (ready) when a book of every configured symbol is held; else which are missing."""
    channels = dict(gw.hub.channels)
    missing = [s for s in gw.symbols if (ch := channels.get(s)) is None or ch.latest is None]
    details: dict[str, Any] = {"symbols": len(gw.symbols), "streams": len(gw.open), "publisher": gw.endpoint}
    if missing:
        details["missing"] = missing
        return f"no book yet of {', '.join(missing)}", details
    return None, details


def start(gw: Gateway) -> MetricsServer | None:
    """Serve the gateway's endpoint on ``gateway_grpc.metrics`` (none when unset), ticking from the
    running loop. Raises :class:`common.metrics.MetricsError` when it cannot bind."""
    health = Health("gateway_grpc", ready=lambda: readiness(gw))
    server = metrics.serve(gw.gw.metrics,
                           [metrics.FunctionCollector(lambda: collect(gw))], health)
    if server is not None:
        server.tick_on_loop()
    return server
