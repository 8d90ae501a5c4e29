"""Prometheus metrics and health of a bookmux service, on the address its config gives
(``metrics = "host:port"`` in the service's table; absent: no endpoint).

One small HTTP server per process, in a daemon thread (it blocks in ``select`` between requests,
waking twice a second to see whether it is to stop; nothing spins)::

    GET /metrics   the Prometheus text format of the service's registry
    GET /healthz   200 {"alive": true, ...} when the service's main loop ticked within
                   ``stall_after`` seconds, else 503 {"alive": false, "reason": ...}
    GET /readyz    200 {"ready": true, ...} when every book the process owns is synced (each
                   service defines it, see its metrics module), else 503 {"ready": false,
                   "reason": ..., ...}; a process that is not alive is not ready either

Counting stays off the per-level hot path: services keep their plain counters (a ``Counter`` or
an int per batch or frame) and a *collector* turns them into metric families when Prometheus
scrapes (:class:`prometheus_client.registry.Collector`); nothing here is called per level. The
collector runs in the server thread and only reads: it copies dicts and lists in one C-level step
(atomic under the GIL) before it iterates them.

:class:`LatencyHistogram` is the one thing a service updates on its own path (one observation
per published snapshot or per query): a bisect and two additions, no lock, exported as a
Prometheus histogram at scrape time.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger("metrics")

#: Seconds without a tick of the main loop after which ``/healthz`` says the process is stuck.
STALL_AFTER = 10.0
#: Seconds between the ticks of an asyncio service's ticker task.
TICK_EVERY = 1.0
#: Latency buckets (s): sub-millisecond on one host up to the seconds of a stalled pipeline.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: What a readiness check returns: None when ready, else the reason; and details for the JSON body.
Readiness = tuple[str | None, dict[str, Any]]


class MetricsError(ValueError):
    """The metrics address is wrong or cannot be bound; the message names it."""


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) -> (host, port); port 0 = any free port."""
    host, colon, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MetricsError(f"metrics address must be \"host:port\" such as \"127.0.0.1:50100\", got {address!r}")
    return host, int(port)


# --- latency histogram ----------------------------------------------------------------------------


class LatencyHistogram:
    """Observations (seconds) in fixed buckets. :meth:`observe` is a bisect and two additions;
    written by one thread (the service's loop), read at scrape time by the server thread (the
    count is derived from the buckets, so a scrape is always consistent within itself)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)     # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last (Prometheus' histogram layout)."""
        counts = list(self.counts)
        out, acc = [], 0
        for bound, n in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), counts):
            acc += n
            out.append((bound, float(acc)))
        return out


# --- metric families ---------------------------------------------------------------------------------


def counter(name: str, doc: str, labels: Iterable[str], values: Iterable[tuple[Iterable[str], float]]) -> Metric:
    """A counter family of ``(label values, value)`` pairs (``name`` without ``_total``)."""
    fam = CounterMetricFamily(name, doc, labels=list(labels))
    for lv, v in values:
        fam.add_metric(list(lv), float(v))
    return fam


def gauge(name: str, doc: str, labels: Iterable[str], values: Iterable[tuple[Iterable[str], float]]) -> Metric:
    """A gauge family of ``(label values, value)`` pairs."""
    fam = GaugeMetricFamily(name, doc, labels=list(labels))
    for lv, v in values:
        fam.add_metric(list(lv), float(v))
    return fam


def histogram(name: str, doc: str, labels: Iterable[str],
              values: Iterable[tuple[Iterable[str], LatencyHistogram]]) -> Metric:
    """A histogram family of ``(label values, LatencyHistogram)`` pairs."""
    fam = HistogramMetricFamily(name, doc, labels=list(labels))
    for lv, h in values:
        buckets = h.buckets()
        fam.add_metric(list(lv), buckets, sum_value=h.sum)
    return fam


def status_gauge(name: str, doc: str, labels: Iterable[str], rows: Iterable[tuple[Iterable[str], str]],
                 statuses: Iterable[str]) -> Metric:
    """An enum-like gauge: for every row, one series per status, 1 for the row's status, 0 else
    (``bookmux_..._status{...,status="live"} == 1``)."""
    sts = list(statuses)
    fam = GaugeMetricFamily(name, doc, labels=[*labels, "status"])
    for lv, st in rows:
        lv = list(lv)
        for s in sts:
            fam.add_metric([*lv, s], 1.0 if s == st else 0.0)
    return fam


def events(name: str, doc: str, labels: Iterable[str], label_values: Iterable[str],
           counts: Mapping[str, int]) -> Metric:
    """Every named counter of a service (``event`` label): what the specific families leave out."""
    lv = list(label_values)
    return counter(name, doc, [*labels, "event"], (([*lv, k], v) for k, v in sorted(dict(counts).items())))


class FunctionCollector:
    """A collector calling ``fn`` at scrape time (``fn`` yields metric families)."""

    def __init__(self, fn: Callable[[], Iterable[Metric]]) -> None:
        self._fn = fn

    def describe(self) -> list[Metric]:
        return []       # no names up front: the registry does not call collect() at register time

    def collect(self) -> Iterator[Metric]:
        yield from self._fn()


# --- health -------------------------------------------------------------------------------------------


class Health:
    """Liveness (the main loop ticked within ``stall_after`` s) and readiness (``ready()`` says
    so) of one service. ``ticked``: where the loop's last tick time is read (monotonic s); by
    default :meth:`tick` sets it. ``clock`` is for tests."""

    def __init__(self, service: str, *, ready: Callable[[], Readiness] | None = None,
                 ticked: Callable[[], float] | None = None, stall_after: float = STALL_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.stall_after = stall_after
        self._ready = ready
        self._clock = clock
        self.last_tick = clock()
        self._ticked = ticked or (lambda: self.last_tick)
        self.started = clock()

    def tick(self) -> None:
        """The main loop is alive (call it from the loop, about once a second or more)."""
        self.last_tick = self._clock()

    async def ticker(self, every: float = TICK_EVERY) -> None:
        """An asyncio service's tick: runs on its event loop, so a blocked loop stops ticking."""
        while True:
            self.tick()
            await asyncio.sleep(every)

    def alive(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        idle = now - self._ticked()
        body: dict[str, Any] = {"service": self.service, "alive": idle <= self.stall_after,
                                "since_tick_s": round(idle, 3), "uptime_s": round(now - self.started, 3)}
        if not body["alive"]:
            body["reason"] = f"main loop has not ticked for {idle:.1f} s (stall_after {self.stall_after:g} s)"
        return body["alive"], body

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok, alive = self.alive()
        body: dict[str, Any] = {"service": self.service, "ready": False}
        if not ok:
            body["reason"] = f"not alive: {alive['reason']}"
            return False, body
        if self._ready is None:
            body["ready"] = True
            return True, body
        try:
            reason, details = self._ready()
        except Exception as e:   # a race with the loop must not break the endpoint
            reason, details = f"readiness check failed: {type(e).__name__}: {e}", {}
        body.update(details)
        body["ready"] = reason is None
        if reason is not None:
            body["reason"] = reason
        return reason is None, body


# --- HTTP server -------------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log (Prometheus scrapes every few seconds)."""


def registry(*collectors: Any, process: bool = True) -> CollectorRegistry:
    """A fresh registry with ``collectors`` (and the process, platform and GC collectors)."""
    reg = CollectorRegistry(auto_describe=False)
    if process:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
    for c in collectors:
        reg.register(c)
    return reg


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of one process on ``address``, in a thread."""

    def __init__(self, address: str, reg: CollectorRegistry, health: Health) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self.registry = reg
        self.health = health
        self._metrics_app = make_wsgi_app(reg)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ticker: asyncio.Task[None] | None = None

    def _json(self, start_response: Any, ok: bool, body: dict[str, Any]) -> list[bytes]:
        data = json.dumps(body, sort_keys=True).encode()
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store")])
        return [data]

    def app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """The WSGI application: /metrics, /healthz, /readyz; 404 otherwise."""
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return self._json(start_response, *self.health.alive())
        if path == "/readyz":
            return self._json(start_response, *self.health.ready())
        data = b"bookmux: /metrics, /healthz, /readyz\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
        return [data]

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port. :class:`MetricsError` when
        the address cannot be bound."""
        try:
            self._server = make_server(self.host, self.port, self.app,
                                       server_class=_Server6 if ":" in self.host else _Server,
                                       handler_class=_QuietHandler)
        except OSError as e:
            raise MetricsError(f"cannot serve metrics on {self.address}: {e}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics", daemon=True)
        self._thread.start()
        log.info("%s: metrics and health on http://%s:%d (/metrics /healthz /readyz)", self.health.service,
                 self.host, self.port)
        return self.port

    def tick_on_loop(self) -> None:
        """Tick :attr:`health` from a task on the running asyncio loop (asyncio services)."""
        self._ticker = asyncio.get_running_loop().create_task(self.health.ticker(), name="health ticker")

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.shutdown()      # serve_forever notices within its 0.5 s poll
            self._server.server_close()
            self._server = None


def serve(address: str | None, collectors: Iterable[Any], health: Health) -> MetricsServer | None:
    """Start the endpoint of ``health.service`` on ``address`` serving ``collectors``; None when no
    address is configured. Raises :class:`MetricsError` when it cannot bind."""
    if not address:
        return None
    server = MetricsServer(address, registry(*collectors), health)
    server.start()
    return server
