"""Metrics and health of the aggregator (common/metrics.py serves them on ``aggregator.metrics``).

Nothing is counted here: at scrape time :func:`collect` reads the aggregator's counters (per
poll batch), each stream's applied message and level counts, its status and book, each feed
link, each symbol's published ``seq`` and the two latency histograms the loop fills (one
observation per published snapshot with new input, one per depletion query).

Readiness (``/readyz``), precisely: every (venue, symbol) stream the configuration gives the
aggregator (each symbol of each enabled venue's feed processes) is ``live`` as the aggregator sees
it, the status it publishes in ``venues``: its feed process was heard within
``aggregator.down_after`` and its connection is up, the stream's snapshot has been applied (no
bus gap being healed) and the feed's last status for it is ``live``. A venue that is down, stale
or syncing makes the aggregator not ready, even though it goes on publishing merged books of the
other venues: ``/readyz`` says the merged books are complete; the 503 body names every stream
that is not live and why, and ``degraded_symbols`` the symbols still served by some venue.
Liveness (``/healthz``): the poll loop ran a round within the last ``STALL_AFTER`` s (a round
ends at least every 100 ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from common import metrics
from common.metrics import Health, Metric, MetricsServer, Readiness
from common.schema import LIVE, STATUSES
from services.aggregator.service import Aggregator

#: bookmux_aggregator_drops_total{reason}: bus input dropped (counted, logged).
DROP_REASONS = {"malformed": "bus_malformed", "duplicate": "bus_duplicates", "unknown_stream": "bus_unknown_stream",
                "unknown_feed": "bus_unknown_feed", "reply_malformed": "snapshot_reply_malformed",
                "reply_unwanted": "snapshot_reply_unwanted", "ctl_malformed": "ctl_malformed"}
STATUS_ORDER = tuple(sorted(STATUSES))


def collect(agg: Aggregator) -> Iterator[Metric]:
    """The aggregator's metric families (server thread: read only)."""
    c = dict(agg.counters)
    states = list(agg.states.values())
    streams = [s for st in states for s in list(st.streams.values())]
    links = list(agg.links)
    yield metrics.counter("bookmux_aggregator_bus_messages", "Messages received from the feeds' buses", [],
                          [([], c.get("bus_messages", 0))])
    yield metrics.counter("bookmux_aggregator_messages", "Stream messages applied (snaps, deltas, statuses)",
                          ["venue", "symbol"], (([s.venue, s.symbol], s.msgs) for s in streams))
    yield metrics.counter("bookmux_aggregator_levels", "Book levels in the snaps and deltas applied",
                          ["venue", "symbol"], (([s.venue, s.symbol], s.levels) for s in streams))
    yield metrics.status_gauge("bookmux_aggregator_venue_status", "Status of each venue's book of each symbol as "
                               "subscribers see it (1 = current)", ["venue", "symbol"],
                               (([s.venue, s.symbol], agg._status(s)) for s in streams), STATUS_ORDER)
    yield metrics.gauge("bookmux_aggregator_feed_up", "1 while the feed process is heard (0: down, its levels out)",
                        ["venue", "shard"], (([lk.venue, str(lk.shard)], 0 if lk.down else 1) for lk in links))
    yield metrics.gauge("bookmux_aggregator_feed_last_heard_timestamp_seconds", "When (Unix s) the feed process "
                        "was last heard", ["venue", "shard"],
                        (([lk.venue, str(lk.shard)], lk.heard_ns / 1e9) for lk in links if lk.heard_ns))
    yield metrics.gauge("bookmux_aggregator_book_levels", "Levels in each venue's book of each symbol",
                        ["venue", "symbol", "side"],
                        (([s.venue, s.symbol, side], len(book)) for s in streams
                         for side, book in (("bid", s.book.bids), ("ask", s.book.asks))))
    yield metrics.gauge("bookmux_aggregator_last_update_timestamp_seconds", "Feed receive time (Unix s) of the "
                        "last update applied to each venue's book", ["venue", "symbol"],
                        (([s.venue, s.symbol], s.rts / 1e9) for s in streams if s.rts))
    yield metrics.counter("bookmux_aggregator_snapshots_published", "Merged snapshots published (the symbol's seq "
                          "in this epoch)", ["symbol"], (([st.symbol], st.seq) for st in states))
    yield metrics.counter("bookmux_aggregator_gaps", "Bus gaps (a stream's seq jumped, or a heartbeat showed lost "
                          "messages): each heals by a snapshot request", [], [([], c.get("gaps", 0))])
    yield metrics.counter("bookmux_aggregator_snapshot_requests", "Snapshot requests sent to feeds", [],
                          [([], c.get("snapshot_requests", 0))])
    yield metrics.counter("bookmux_aggregator_feed_disconnects", "Feed bus connections lost", [],
                          [([], c.get("feed_disconnects", 0))])
    yield metrics.counter("bookmux_aggregator_drops", "Bus input dropped (counted, logged), by reason", ["reason"],
                          (([k], c.get(n, 0)) for k, n in DROP_REASONS.items()))
    yield metrics.histogram("bookmux_aggregator_latency_seconds", "Feed receive time of the newest input of a "
                            "merged snapshot to its publication (end to end inside bookmux; wall clocks)", ["symbol"],
                            (([st.symbol], st.latency) for st in states))
    yield metrics.histogram("bookmux_aggregator_query_seconds", "Depletion query service time", [],
                            [([], agg.query_latency)])
    yield metrics.events("bookmux_aggregator_events", "Every counter of the aggregator by name", [], [], c)


def readiness(agg: Aggregator) -> Readiness:
    """None (ready) when every configured stream is live (module docstring); else why."""
    not_live: dict[str, str] = {}
    degraded: list[str] = []
    for st in list(agg.states.values()):
        live = 0
        for s in list(st.streams.values()):
            status = agg._status(s)
            if status == LIVE:
                live += 1
            elif s.link.down:
                not_live[f"{s.venue} {s.symbol}"] = f"down: feed {s.link.name} not heard (connection lost or " \
                                                     f"silent for {agg.cfg.aggregator.down_after:g} s)"
            elif s.awaiting and s.status == LIVE:
                not_live[f"{s.venue} {s.symbol}"] = "syncing: waiting for the feed's snapshot"
            else:
                not_live[f"{s.venue} {s.symbol}"] = f"{status}: {s.reason}"
        if live and live < len(st.streams):
            degraded.append(st.symbol)
    total = sum(len(st.streams) for st in agg.states.values())
    details: dict[str, Any] = {"streams": total, "not_live": not_live, "degraded_symbols": degraded,
                               "feeds_down": sorted(lk.name for lk in agg.links if lk.down)}
    if not_live:
        return f"{len(not_live)} of {total} venue book(s) not live: {', '.join(sorted(not_live))}", details
    return None, details


def start(agg: Aggregator) -> MetricsServer | None:
    """Serve the aggregator's endpoint on ``aggregator.metrics`` (none when unset). Raises
    :class:`common.metrics.MetricsError` when it cannot bind."""
    health = Health("aggregator", ready=lambda: readiness(agg), ticked=lambda: agg.ticked)
    return metrics.serve(agg.cfg.aggregator.metrics,
                         [metrics.FunctionCollector(lambda: collect(agg))], health)
