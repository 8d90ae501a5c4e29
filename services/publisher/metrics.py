"""Metrics and health of the publisher (common/metrics.py serves them on ``publisher.metrics``).

Nothing is counted here: at scrape time :func:`collect` reads the publisher's counters, its open
subscriptions per topic (from the XPUB's subscribe/unsubscribe reports) and the latency
histograms it fills (one observation per forwarded snapshot with new input).

Readiness (``/readyz``): the publisher is receiving from the aggregator (from each of its
processes, with ``[[aggregator.shards]]``): it has received a snapshot from it since it started,
and since the last loss of its connection to it (seen by the socket monitor). The aggregator
publishes only when a book changes, so silence alone is not a loss (a quiet market stays ready);
a stuck aggregator shows in the aggregator's own ``/healthz``.
Liveness (``/healthz``): the poll loop ran a round within the last ``STALL_AFTER`` s (a round
ends at least every 500 ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from common import metrics
from common.metrics import Health, Metric, MetricsServer, Readiness
from services.publisher.service import Publisher

#: A subscription topic other than "book.<carried symbol>" (or a prefix of all) is counted under
#: this label, so hostile topics cannot grow the number of series.
OTHER = "other"


def _topic_label(topic: bytes, symbols: set[str]) -> str:
    if topic.startswith(b"book."):
        sym = topic[5:].decode("ascii", "replace")
        if sym in symbols:
            return sym
    if b"book.".startswith(topic):
        return "*"          # "", "b", ... "book.": every symbol
    return OTHER


def collect(pub: Publisher, symbols: set[str]) -> Iterator[Metric]:
    """The publisher's metric families (server thread: read only)."""
    c = dict(pub.counters)
    subs: dict[str, int] = {}
    for topic, n in list(pub.subscriptions.items()):
        label = _topic_label(topic, symbols)
        subs[label] = subs.get(label, 0) + n
    yield metrics.counter("bookmux_publisher_snapshots_published", "Merged snapshots forwarded to subscribers", [],
                          [([], c.get("published", 0))])
    yield metrics.gauge("bookmux_publisher_subscriptions", "Open subscriptions on the subscriber socket, by symbol "
                        "(*: every symbol; other: any other topic)", ["symbol"],
                        (([s], subs.get(s, 0)) for s in [*sorted(symbols), "*", OTHER]))
    yield metrics.counter("bookmux_publisher_subscribe_requests", "Subscriptions received (each asks the aggregator "
                          "to republish)", [], [([], c.get("subscriptions", 0))])
    yield metrics.counter("bookmux_publisher_upstream_gaps", "Snapshots missed from the aggregator (seq jumps)", [],
                          [([], c.get("upstream_gaps", 0))])
    yield metrics.counter("bookmux_publisher_upstream_disconnects", "Connections to the aggregator lost", [],
                          [([], c.get("upstream_disconnects", 0))])
    yield metrics.counter("bookmux_publisher_drops", "Input dropped (counted, logged), by reason", ["reason"],
                          [(["malformed"], c.get("malformed", 0)),
                           (["republish_blocked"], c.get("republish_blocked", 0))])
    reason, _ = readiness(pub)
    yield metrics.gauge("bookmux_publisher_upstream_up", "1 while the publisher is receiving from the aggregator",
                        [], [([], 1 if reason is None else 0)])
    yield metrics.histogram("bookmux_publisher_latency_seconds", "Feed receive time of the newest input of a merged "
                            "snapshot to its forwarding to subscribers (wall clocks)", ["symbol"],
                            (([s], h) for s, h in sorted(dict(pub.latency).items())))
    yield metrics.events("bookmux_publisher_events", "Every counter of the publisher by name", [], [], c)


def readiness(pub: Publisher) -> Readiness:
    """None (ready) when receiving from every aggregator process (module docstring); else why.
    With ``[[aggregator.shards]]`` each shard counts on its own: one that never delivered, or lost
    its connection and delivered nothing since, makes the publisher not ready (it names them)."""
    ups = pub.upstreams
    details: dict[str, Any] = {"upstream": ups[0].pub if len(ups) == 1 else [u.pub for u in ups]}
    never = [u.pub for u in ups if u.index not in pub.connected_shards]
    if never:
        return f"nothing received from the aggregator yet ({', '.join(never)})", details
    lost = [u.pub for u in ups if u.index not in pub._fresh]
    if lost:
        return f"connection to the aggregator lost; nothing received since ({', '.join(lost)})", details
    return None, details


def start(pub: Publisher) -> MetricsServer | None:
    """Serve the publisher's endpoint on ``publisher.metrics`` (none when unset). Raises
    :class:`common.metrics.MetricsError` when it cannot bind."""
    symbols = set(pub.cfg.all_symbols)
    health = Health("publisher", ready=lambda: readiness(pub), ticked=lambda: pub.ticked)
    return metrics.serve(pub.cfg.publisher.metrics,
                         [metrics.FunctionCollector(lambda: collect(pub, symbols))], health)
