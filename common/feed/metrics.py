"""Metrics and health of a feed process (one venue, or one shard of it): see common/metrics.py.

Nothing is counted here: at scrape time :func:`collect` reads the core's ``Counter`` (frames,
resyncs, drops ... counted per frame or per event by the core and the transport), the levels its
handlers count per event, its symbol streams (status, book depth, last update) and the
transport's connection count.

Readiness (``/readyz``): every symbol the venue lists (``SymbolStream.listed``) is ``live`` on the
feed's bus; a symbol the venue does not list (found by the pair check) does not count, a feed
left with no listed symbol is not ready. Liveness (``/healthz``): the asyncio loop ran its ticker
task within the last ``STALL_AFTER`` s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from common import metrics
from common.metrics import Health, Metric, MetricsServer, Readiness
from common.schema import STATUSES

if TYPE_CHECKING:
    from common.feed.runner import FeedRunner

#: bookmux_feed_resyncs_total{cause}: one symbol's book thrown away and rebuilt, from the core's
#: counters; ``reconnect``: a connection ended (every symbol on it rebuilds its book).
RESYNC_CAUSES = {"gap": "gaps", "checksum": "checksum_failures", "crossed": "resync_crossed",
                 "malformed": "resync_malformed", "timeout": "snapshot_timeouts"}
#: bookmux_feed_reconnects_total{cause}: why a connection ended (runner's Outcome.cause).
RECONNECT_CAUSES = ("connect_failed", "lost", "requested", "stale", "max_age")
#: bookmux_feed_drops_total{reason}: input dropped (counted, logged), never applied.
DROP_REASONS = {"malformed": "malformed", "stale_event": "dropped_stale", "unknown_symbol": "unknown_symbol",
                "offline": "dropped_offline", "after_reconnect": "ignored_after_reconnect",
                "bus_full": "bus_dropped", "bad_snapshot_request": "ctl_bad_request"}
#: bookmux_feed_snapshot_failures_total{reason}: REST snapshots that did not make a book.
SNAPSHOT_FAILURES = {"error": "snapshot_errors", "rate_limited": "rest_rate_limited",
                     "not_current": "snapshot_refetch"}
STATUS_ORDER = tuple(sorted(STATUSES))


def collect(runner: FeedRunner) -> Iterator[Metric]:
    """The feed's metric families, read from the runner and its core (server thread: read only)."""
    core = runner.core
    venue = core.cfg.id
    c: dict[str, int] = dict(core.counters)      # one C-level copy: atomic under the GIL
    streams = list(core.streams.values())
    v = [venue]
    yield metrics.counter("bookmux_feed_frames", "WebSocket frames received", ["venue"], [(v, c.get("frames", 0))])
    yield metrics.counter("bookmux_feed_levels", "Book levels received in depth updates (in-band and REST "
                          "snapshots not counted)", ["venue"], [(v, core.handlers.levels_in)])
    yield metrics.counter("bookmux_feed_deltas", "Deltas published on the feed bus (updates coalesced per symbol)",
                          ["venue"], [(v, core.out.deltas)])
    yield metrics.counter("bookmux_feed_snapshots", "Books (re)built and published whole (a symbol went live)",
                          ["venue"], [(v, c.get("syncs", 0))])
    ends = sum(c.get(f"reconnects_{k}", 0) for k in RECONNECT_CAUSES)
    yield metrics.counter("bookmux_feed_resyncs", "Books thrown away and rebuilt, by cause (reconnect: a connection "
                          "ended, every symbol on it rebuilds)", ["venue", "cause"],
                          [*(([venue, k], c.get(n, 0)) for k, n in RESYNC_CAUSES.items()),
                           ([venue, "reconnect"], ends)])
    yield metrics.counter("bookmux_feed_reconnects", "Connections ended, by cause", ["venue", "cause"],
                          (([venue, k], c.get(f"reconnects_{k}", 0)) for k in RECONNECT_CAUSES))
    yield metrics.counter("bookmux_feed_connects", "WebSocket connection attempts", ["venue"], [(v, runner.connects)])
    yield metrics.counter("bookmux_feed_gaps", "Sequence gaps: in one symbol's updates, or in the connection's "
                          "sequence number (Coinbase)", ["venue", "scope"],
                          [([venue, "symbol"], c.get("gaps", 0)), ([venue, "connection"], c.get("conn_seq_gaps", 0))])
    yield metrics.counter("bookmux_feed_checksum_failures", "Venue checksum mismatches (each resyncs the symbol)",
                          ["venue"], [(v, c.get("checksum_failures", 0))])
    yield metrics.counter("bookmux_feed_drops", "Input dropped (counted and logged), by reason", ["venue", "reason"],
                          (([venue, k], c.get(n, 0)) for k, n in DROP_REASONS.items()))
    yield metrics.counter("bookmux_feed_snapshot_failures", "REST snapshots that did not make a book, by reason",
                          ["venue", "reason"], (([venue, k], c.get(n, 0)) for k, n in SNAPSHOT_FAILURES.items()))
    yield metrics.gauge("bookmux_feed_connected", "1 while the WebSocket connection is open", ["venue"],
                        [(v, 0 if core.connected_at is None else 1)])
    yield metrics.status_gauge("bookmux_feed_symbol_status", "Status of each symbol on the feed bus (1 = current)",
                               ["venue", "symbol"], (([venue, st.symbol], st.status) for st in streams), STATUS_ORDER)
    yield metrics.gauge("bookmux_feed_book_levels", "Levels in the feed's book of each symbol",
                        ["venue", "symbol", "side"],
                        (([venue, st.symbol, side], len(book)) for st in streams
                         for side, book in (("bid", st.book.bids), ("ask", st.book.asks))))
    yield metrics.gauge("bookmux_feed_last_update_timestamp_seconds", "Receive time (Unix s) of the last update "
                        "applied to each symbol's book", ["venue", "symbol"],
                        (([venue, st.symbol], st.rts / 1e9) for st in streams if st.rts))
    yield metrics.events("bookmux_feed_events", "Every counter of the feed process by name", ["venue"], v, c)


def readiness(runner: FeedRunner) -> Readiness:
    """None (ready) when every listed symbol is live; else why, with each symbol's status."""
    streams = [(st.symbol, st.status, st.reason, st.listed) for st in list(runner.core.streams.values())]
    symbols = {s: status if status == "live" else f"{status}: {reason}" for s, status, reason, listed in streams
               if listed}
    details: dict[str, Any] = {"venue": runner.core.cfg.id, "symbols": symbols,
                               "unlisted": sorted(s for s, _, _, listed in streams if not listed)}
    if not symbols:
        return "the venue lists none of the configured symbols", details
    waiting = sorted(s for s, status, _, listed in streams if listed and status != "live")
    if waiting:
        return f"{len(waiting)} of {len(symbols)} symbol(s) not live: {', '.join(waiting)}", details
    return None, details


def start(runner: FeedRunner) -> MetricsServer | None:
    """Serve the feed's endpoint on ``cfg.metrics`` (none when unset), ticking from the running
    loop. Raises :class:`common.metrics.MetricsError` when it cannot bind."""
    health = Health(f"feed {runner.cfg.id}", ready=lambda: readiness(runner))
    server = metrics.serve(runner.cfg.metrics, [metrics.FunctionCollector(lambda: collect(runner))], health)
    if server is not None:
        server.tick_on_loop()
    return server
