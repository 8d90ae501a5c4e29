"""The feed transport: all the I/O of a feed process around the I/O-free :class:`FeedCore`
(:mod:`common.feed.core` holds every venue rule; this module holds none).

Per process: one WebSocket connection carrying every configured symbol of one venue, a PUB socket
(``VenueConfig.pub``, bound) for the feed bus and a ROUTER (``VenueConfig.ctl``, bound) answering
snapshot requests, both laid out in :mod:`common.schema`.

Life of a connection::

    connect -> core.connected (subscribe frames, every symbol "syncing") -> frames into the core;
    REST snapshots fetched off the loop when the core asks -> the core publishes SNAP (= live) and
    DELTAs ... -> connection lost / stale / the core asks to reconnect -> every symbol "down",
    "stale" or "syncing" -> sleep the next backoff delay -> connect again

* Liveness is per connection: any frame, WebSocket ping or pong counts. The runner pings every
  ``ping_every`` s so a quiet but healthy connection still answers; silence for ``stale_after``
  s marks every symbol ``stale`` and reconnects. A quiet symbol on a live connection is not stale
  by this rule; the core's ``quiet_after`` watches each symbol's book (see :mod:`common.feed.core`).
* Reconnect delays come from :func:`common.feed.backoff.backoff`; a fresh generator (a reset) is
  made only after a synced book was published on the connection that just ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import picows
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport

from common.config import ConfigError, VenueConfig
from common.feed import metrics as feed_metrics
from common.feed.actions import Action, Fetch, Reconnect, Send
from common.feed.backoff import backoff
from common.feed.capture import CaptureWriter, CapturingCore, header_for
from common.feed.core import QUIET_RESYNCS_PER_MIN, FeedCore
from common.feed.feedbus import FeedBus
from common.feed.fetcher import RestClient
from common.feed.pairs import pair_check
from common.feed.spec import FeedSpec
from common.feed.stream import SymbolStream
from common.logs import RateLimitedLog
from common.metrics import MetricsServer
from common.schema import DOWN, STALE, SYNCING
from common.security import Security

#: Options every venue understands (``[venues.<id>.options]``), with their defaults. A spec adds
#: its own in ``FeedSpec.options``; any other key is a configuration error.
RUNNER_OPTIONS: dict[str, Any] = {
    # Timeouts
    "ping_every": None,         # s between our WebSocket pings; None: stale_after / 3
    "open_timeout": 10.0,       # s for the WebSocket handshake
    "rest_timeout": 10.0,       # s per REST call
    # Retry policy
    "backoff_initial": 0.5,     # s, first reconnect delay
    "backoff_cap": 30.0,        # s, largest reconnect delay
    "backoff_jitter": 0.5,      # fraction of a delay taken off at random
    "snapshot_retry_cap": 5.0,  # s, largest delay between snapshot refetches
    # Limits
    "rest_concurrency": 2,      # snapshot fetches in flight at once
    "heartbeat_every": None,    # s between application keep-alive frames; None: the spec's
    "max_conn_age": None,       # s before a proactive reconnect; None: the spec's
    "pair_check": True,         # check the symbols against the venue's pair list at start-up
    "precision": None,          # [price decimals, qty decimals] for checksums when the venue does not say
    "quiet_resyncs_per_min": QUIET_RESYNCS_PER_MIN,  # resyncs of quiet symbols (quiet_after) a minute
}

TICK = 0.25             # s between the core's timeout checks

#: permessage-deflate is not offered (picows has none): market-data frames are a few hundred bytes,
#: and inflating each one cost ~9 % of a feed's CPU per frame (py-spy, 10x, issue 12).


def resolve_options(spec: FeedSpec, cfg: VenueConfig) -> dict[str, Any]:
    """Defaults (runner, then spec) overridden by ``cfg.options``; unknown keys raise ConfigError."""
    known = {**RUNNER_OPTIONS, **spec.options}
    extra = sorted(set(cfg.options) - set(known))
    if extra:
        raise ConfigError(f"venues.{cfg.id}.options: unknown key(s) {extra}; allowed: {sorted(known)}")
    opts = {**known, **cfg.options}
    if opts["ping_every"] is None:
        opts["ping_every"] = cfg.stale_after / 3
    if opts["heartbeat_every"] is None:
        opts["heartbeat_every"] = spec.heartbeat_every
    if opts["max_conn_age"] is None:
        opts["max_conn_age"] = spec.max_conn_age
    return opts


async def keepalive(ws: VenueSocket, ping_every: float, hb_frame: str | None, hb_every: float) -> None:
    """Ping every ``ping_every`` s and send ``hb_frame`` every ``hb_every`` s, until the connection
    closes (SocketClosed)."""
    now = time.monotonic()
    next_ping, next_hb = now + ping_every, now + hb_every
    while True:
        await asyncio.sleep(max(0.0, min(next_ping, next_hb if hb_frame else next_ping) - time.monotonic()))
        now = time.monotonic()
        if now >= next_ping:
            await ws.ping()
            next_ping = now + ping_every
        if hb_frame and now >= next_hb:
            await ws.send(hb_frame)
            next_hb = now + hb_every


class SocketClosed(Exception):
    """The venue connection is closed (raised by :meth:`VenueSocket.send` and :meth:`VenueSocket.ping`)."""


#: Close codes after which a closing by the venue is a normal one ("closed by the venue"), else
#: the connection counts as lost: 1000 normal closure, 1001 going away, 1005 no code given.
_NORMAL_CLOSE = frozenset((1000, 1001, 1005))


class VenueSocket(WSListener):
    """One WebSocket connection to a venue, on picows (a Cython WebSocket client: frames are
    parsed in C and handed over by a callback, without a future or a task switch per message).

    Why not python-websockets (measured, issue 12, py-spy of a feed at 10x): its frame parser (a
    Python generator per frame) plus its per-message assembler and future cost more than the whole
    venue parse, book apply and bus encode. Kept as websockets did it: answering pings (counted
    in :attr:`pings`), the closing handshake (the venue's close is answered with its code), the
    maximum message size (``max_size``: a bigger frame or fragmented message fails the
    connection with 1009), text that is not UTF-8 (1007), the handshake timeout, no
    compression offered, ``wss://`` with the default TLS context, the environment's proxy
    (:func:`env_proxy`).

    Delivery: each data message goes to ``on_message(data, rts, now)`` (text as ``str``, binary as
    ``bytes``) as soon as it is parsed, and ``on_batch()`` runs after the last frame of each read,
    so the feed publishes once per read. ``rts`` and ``now`` are taken once per read. Messages
    that arrive before :meth:`deliver` wait for it; after :meth:`stop_delivery` they are dropped.
    An exception in a callback ends the connection and is raised from :attr:`ended`. Any frame
    (data, ping, pong, close) refreshes :attr:`last_heard`."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.transport: WSTransport | None = None
        self.last_heard = time.monotonic()
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.failure: str | None = None       # why we failed the connection (1007, 1009)
        self.on_message: Callable[[str | bytes, int, float], None] | None = None
        self.on_batch: Callable[[], None] | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._early: list[tuple[str | bytes, int, float]] | None = []
        self._parts: list[bytes] = []
        self._parts_text = False
        self._parts_size = 0
        self._fresh = True
        self._rts = 0
        self._now = 0.0
        self._got = 0

    @classmethod
    async def connect(cls, url: str, *, open_timeout: float, max_size: int) -> VenueSocket:
        """Open the connection (TCP, TLS for ``wss://``, the HTTP upgrade) within ``open_timeout`` s."""
        sock: VenueSocket | None = None

        def factory() -> VenueSocket:
            nonlocal sock
            sock = cls(max_size)
            return sock
        async with asyncio.timeout(open_timeout):
            await picows.ws_connect(factory, url, websocket_handshake_timeout=open_timeout,
                                    enable_auto_pong=False, max_frame_size=max_size,
                                    logger_name="feed.websocket", proxy=env_proxy(url))
        assert sock is not None
        return sock

    # --- picows callbacks -----------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.last_heard = time.monotonic()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        hs = transport.close_handshake
        if hs is not None and hs.recv is not None and self.close_code is None:
            self.close_code, self.close_reason = _code(hs.recv.code) or 1005, hs.recv.reason
        self._end(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._fresh:
            self._fresh = False
            self._now = self.last_heard = time.monotonic()
            self._rts = time.time_ns()
        try:
            self._frame(transport, frame)
        except Exception as e:  # handed to the reading task
            self._end(e)
        if frame.last_in_buffer:
            self._fresh = True
            if self._got:
                self._got = 0
                if self.on_batch is not None:
                    try:
                        self.on_batch()
                    except Exception as e:  # handed to the reading task
                        self._end(e)

    def _frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        msg: str | bytes
        if frame.fin and (t is WSMsgType.TEXT or t is WSMsgType.BINARY):
            if self._parts:
                self._fail(1002, "a new message inside a fragmented one")
                return
            if t is WSMsgType.TEXT:
                try:
                    msg = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError as e:
                    self._fail(1007, f"{e.reason} at position {e.start}")
                    return
            else:
                msg = frame.get_payload_as_bytes()
        elif t is WSMsgType.TEXT or t is WSMsgType.BINARY or t is WSMsgType.CONTINUATION:
            if (t is WSMsgType.CONTINUATION) != bool(self._parts):
                self._fail(1002, "continuation frame out of place")
                return
            if t is not WSMsgType.CONTINUATION:
                self._parts_text, self._parts_size = t is WSMsgType.TEXT, 0
            self._parts_size += frame.payload_size
            if self._parts_size > self.max_size:
                self._fail(1009, f"message over {self.max_size} bytes")
                return
            self._parts.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            data, self._parts = b"".join(self._parts), []
            if self._parts_text:
                try:
                    msg = data.decode()
                except UnicodeDecodeError as e:
                    self._fail(1007, f"{e.reason} at position {e.start}")
                    return
            else:
                msg = data
        elif t is WSMsgType.PING:
            self.pings += 1
            transport.send_pong(frame.get_payload_as_bytes())
            return
        elif t is WSMsgType.CLOSE:
            code = _code(frame.get_close_code()) or 1005        # 1005: the close frame had no code
            self.close_code, self.close_reason = code, frame.get_close_reason()
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK if code == 1005 else frame.get_close_code(),
                                     frame.get_close_message())
            transport.disconnect()
            return
        else:
            return          # PONG: liveness only
        if self.on_message is not None:
            self._got += 1
            self.on_message(msg, self._rts, self._now)
        elif self._early is not None:
            self._early.append((msg, self._rts, self._now))

    def _fail(self, code: int, why: str) -> None:
        """Fail the connection: close frame with ``code``, then drop it."""
        self.failure = f"sent {code} ({why})"
        self.stop_delivery()
        assert self.transport is not None
        self.transport.send_close(WSCloseCode(code), why.encode()[:120])
        self.transport.disconnect()

    def _end(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.stop_delivery()
            if self.transport is not None:
                self.transport.disconnect(graceful=False)
        if not self.ended.done():
            if exc is None:
                self.ended.set_result(None)
            else:
                self.ended.set_exception(exc)

    # --- the runner's side ----------------------------------------------------------------------

    def deliver(self, on_message: Callable[[str | bytes, int, float], None], on_batch: Callable[[], None]) -> None:
        """Start delivering messages (those that arrived since the handshake first)."""
        early, self._early = self._early or [], None
        self.on_message, self.on_batch = on_message, on_batch
        try:
            for m in early:
                on_message(*m)
            if early:
                on_batch()
        except Exception as e:  # handed to the reading task
            self._end(e)

    def stop_delivery(self) -> None:
        """Drop whatever arrives from now on."""
        self.on_message = self.on_batch = None
        self._early = None

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_disconnected

    def outcome_reason(self) -> tuple[bool, str]:
        """(closed normally by the venue, why the connection ended), once it has."""
        if self.failure is not None:
            return False, self.failure
        if self.close_code is not None:
            if self.close_code in _NORMAL_CLOSE:
                return True, f"{self.close_code} {self.close_reason!r}"
            return False, f"received {self.close_code} {self.close_reason!r}"
        return False, "no close frame received"

    async def send(self, text: str) -> None:
        if self.closed:
            raise SocketClosed("the connection is closed")
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, text.encode())

    async def ping(self) -> None:
        if self.closed:
            raise SocketClosed("the connection is closed")
        assert self.transport is not None
        self.transport.send_ping()

    async def close(self, timeout: float = 1.0) -> None:
        """The closing handshake (1000), waiting ``timeout`` s for the venue's answer, then drop."""
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode.OK)
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(self.ended), timeout)
        t.disconnect(graceful=False)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``*_proxy`` variables, ``no_proxy``
    honoured), as python-websockets chose it: for ``wss://`` a ``wss``, ``socks`` or ``https``
    proxy, for ``ws://`` also ``http``; None for a direct connection."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    if urllib.request.proxy_bypass(f"{parts.hostname}:{port}"):
        return None
    proxies = urllib.request.getproxies()
    for scheme in (("wss", "socks", "https") if secure else ("ws", "socks", "https", "http")):
        if proxies.get(scheme):
            return proxies[scheme]
    return None


def _code(code: Any) -> int:
    return int(getattr(code, "value", code))


@dataclass
class Outcome:
    """How a connection ended: the status its symbols get, why, whether to skip the backoff, and
    the cause it is counted under (``reconnects_<cause>``: connect_failed, lost, requested by the
    core, stale, max_age)."""

    status: str
    reason: str
    immediate: bool = False
    cause: str = "lost"


class FeedRunner:
    """Run one venue's feed until :meth:`stop`. See the module docstring for the life cycle."""

    def __init__(self, spec: FeedSpec, cfg: VenueConfig, *, max_msg_size: int = 64 * 1024 * 1024,
                 log: logging.Logger | None = None, rng: random.Random | None = None,
                 sec: Security | None = None, capture: str | None = None, capture_rotate_mb: float = 64.0,
                 capture_rotate_s: float = 3600.0) -> None:
        self.sec = sec                 # CURVE (common/security.py) on both sockets when set
        self.spec = spec
        self.cfg = cfg
        self.opts = resolve_options(spec, cfg)
        self.max_msg_size = max_msg_size
        self.rng = rng or random.Random()
        # Capture (common/feed/capture.py): the same core, recording every input and bus batch.
        core_cls = CapturingCore if capture else FeedCore
        self.core = core_cls(spec, cfg, self.opts, sess=time.time_ns(), log=log, rng=self.rng)
        self.capture: CaptureWriter | None = None
        if capture:
            assert isinstance(self.core, CapturingCore)
            self.capture = CaptureWriter(capture, cfg.id, self.core.sess, header_for(self.core),
                                         rotate_mb=capture_rotate_mb, rotate_s=capture_rotate_s,
                                         log=self.core.log, counters=self.core.counters)
            self.core.writer = self.capture
        self.connects = 0
        self.delays_slept: list[float] = []
        self._stop: asyncio.Event | None = None
        self.rest = RestClient(self.core, self.opts, self._drain)
        self.bus = FeedBus(self.core, sec=sec)
        self._ws: VenueSocket | None = None
        self._conn_actions: asyncio.Queue[Action] | None = None

    # The core's state, under the names tests and tools know.
    @property
    def log(self) -> logging.Logger:
        return self.core.log

    @log.setter
    def log(self, log: logging.Logger) -> None:
        self.core.log = log
        self.core.rlog = RateLimitedLog(log)

    @property
    def sess(self) -> int:
        return self.core.sess

    @property
    def counters(self) -> Any:
        return self.core.counters

    @property
    def symbols(self) -> dict[str, SymbolStream]:
        return self.core.streams

    # --- life cycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from a signal handler on the loop)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Bind the sockets, check the pairs, then run the connection, heartbeat and snapshot
        service until :meth:`stop`. An unexpected exception in any of them ends the run (and the
        process; the supervisor restarts it) after publishing ``down``."""
        self._stop = asyncio.Event()
        self.rest.open()
        self.log.info("%s feed session %d: pub %s, ctl %s, symbols %s", self.cfg.id, self.sess,
                      self.cfg.pub, self.cfg.ctl, ", ".join(self.symbols))
        if self.capture is not None:
            self.log.info("%s: capturing every input to %s", self.cfg.id, self.capture.folder)
        tasks: list[asyncio.Task[Any]] = []
        endpoint: MetricsServer | None = None
        try:
            tasks = self.bus.open()
            endpoint = feed_metrics.start(self)     # /metrics /healthz /readyz when cfg.metrics is set
            self.core.start(time.time_ns())
            self.bus.publish()
            main = asyncio.create_task(self._main(), name="connection")
            tasks.append(main)
            stopper = asyncio.create_task(self._stop.wait(), name="stop")
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    self.log.error("%s feed: task %s failed", self.cfg.id, t.get_name(),
                                   exc_info=t.exception())
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            self.rest.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            rts = time.time_ns()
            if isinstance(self.core, CapturingCore):
                self.core.record_stop(rts)
            for st in self.symbols.values():
                if st.listed:
                    self.core.out.status(st, DOWN, "feed stopping", rts)
            self.bus.close()
            if endpoint is not None:
                endpoint.close()
            if self.capture is not None:
                self.capture.close()
            self.rest.close()
            self.log.info("%s feed stopped; counters %s", self.cfg.id, dict(self.counters))

    async def _main(self) -> None:
        if self.opts["pair_check"]:
            await pair_check(self.core, self.rest.get, self._sleep, self.rng)
            self.bus.publish()
        await self._connection_loop()

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` s unless stopped first; True when stopped."""
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    def _drain(self) -> None:
        """After any input to the core: publish its bus messages, start the fetches it asks for,
        and hand Send/Reconnect to the connection task (which owns the WebSocket)."""
        self.bus.publish()
        for a in self.core.take_actions():
            if isinstance(a, Fetch):
                self.rest.start(a)
            elif self._conn_actions is not None:
                self._conn_actions.put_nowait(a)

    # --- REST snapshots -----------------------------------------------------------------------

    # --- pair check ---------------------------------------------------------------------------

    # --- connection ---------------------------------------------------------------------------

    def _new_backoff(self) -> Any:
        return backoff(initial=float(self.opts["backoff_initial"]), cap=float(self.opts["backoff_cap"]),
                       jitter=float(self.opts["backoff_jitter"]), rng=self.rng)

    async def _connection_loop(self) -> None:
        assert self._stop is not None
        active = self.core.active
        if not active:
            self.log.error("%s: no symbol to carry; idling (heartbeats and status only)", self.cfg.id)
            await self._stop.wait()
            return
        delays = self._new_backoff()
        failures = 0
        while not self._stop.is_set():
            url = self.spec.ws_url(self.cfg, [st.key for st in self.core.active])
            outcome = await self._one_connection(url)
            self.counters[f"reconnects_{outcome.cause}"] += 1
            self.rest.cancel()
            self.core.disconnected(outcome.status, outcome.reason, time.time_ns())
            self.bus.publish()
            if self._stop.is_set():
                break
            if self.core.synced_on_conn:
                delays = self._new_backoff()
                failures = 0
            failures += 0 if outcome.immediate else 1
            delay = 0.0 if outcome.immediate else next(delays)
            self.log.warning("%s: connection ended (%s); reconnecting in %.3f s (failure %d since the "
                             "last synced book)", self.cfg.id, outcome.reason, delay, failures)
            self.delays_slept.append(delay)
            if await self._sleep(delay):
                break

    async def _one_connection(self, url: str) -> Outcome:
        self.connects += 1
        try:
            ws = await VenueSocket.connect(url, open_timeout=float(self.opts["open_timeout"]),
                                           max_size=self.max_msg_size)
        except (OSError, WSError, TimeoutError) as e:
            return Outcome(DOWN, f"connect to {url[:120]} failed: {type(e).__name__}: {e}", cause="connect_failed")
        self.log.info("%s: connected to %s (%d symbols)", self.cfg.id, url[:200], len(self.core.active))
        self._ws = ws
        self._conn_actions = asyncio.Queue()
        tasks: list[asyncio.Task[Outcome]] = []
        try:
            self.core.connected(time.monotonic(), time.time_ns())
            self._drain()
            tasks = [asyncio.create_task(self._actions(ws)), asyncio.create_task(self._read(ws)),
                     asyncio.create_task(self._keepalive(ws)), asyncio.create_task(self._watchdog(ws))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        except SocketClosed as e:
            return Outcome(DOWN, f"connection closed: {e}")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            ws.stop_delivery()
            self._ws = None
            self._conn_actions = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
            self.counters["ws_pings_received"] += ws.pings

    async def _actions(self, ws: VenueSocket) -> Outcome:
        """Send what the core asks to send; end the connection when it asks to reconnect."""
        assert self._conn_actions is not None
        q = self._conn_actions
        try:
            while True:
                a = await q.get()
                if isinstance(a, Send):
                    for f in a.frames:
                        await ws.send(f)
                    if a.frames:
                        self.log.info("%s: sent %d frame(s): %s", self.cfg.id, len(a.frames), a.frames[0][:160])
                elif isinstance(a, Reconnect):
                    return Outcome(a.status, a.reason, a.immediate, cause="requested")
        except SocketClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")

    async def _read(self, ws: VenueSocket) -> Outcome:
        """Feed every received message to the core (from inside the connection's
        frame callback, see :class:`VenueSocket`) until the connection ends."""
        core = self.core
        counters = self.counters
        frame = core.frame

        def on_message(text: str | bytes, rts: int, now: float) -> None:
            counters["frames"] += 1        # per frame, never per level (metrics read it)
            frame(text, rts, now)

        def on_batch() -> None:
            core.flush()                   # coalesce per read: one delta per symbol
            self._drain()

        ws.deliver(on_message, on_batch)
        try:
            await asyncio.shield(ws.ended)
        finally:
            ws.stop_delivery()
        normal, why = ws.outcome_reason()
        if normal:
            return Outcome(DOWN, f"connection closed by the venue: {why}")
        return Outcome(DOWN, f"connection lost: {why}")

    async def _keepalive(self, ws: VenueSocket) -> Outcome:
        """Our WebSocket pings (their pongs are liveness) and the venue's application heartbeat."""
        try:
            await keepalive(ws, float(self.opts["ping_every"]), self.spec.heartbeat_frame,
                            float(self.opts["heartbeat_every"]))
        except SocketClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")
        raise AssertionError("keepalive returned")  # pragma: no cover

    async def _watchdog(self, ws: VenueSocket) -> Outcome:
        """Silence on the connection, its age, and the core's own timeouts."""
        started = time.monotonic()
        stale_after = self.cfg.stale_after
        max_age = self.opts["max_conn_age"]
        tick = min(TICK, stale_after / 5)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            idle = now - ws.last_heard
            if idle > stale_after:
                self.counters["stale"] += 1
                return Outcome(STALE, f"no frame or ping for {idle:.1f} s (stale_after {stale_after} s)", cause="stale")
            if max_age and now - started > max_age:
                self.counters["max_age_reconnects"] += 1
                return Outcome(SYNCING, f"reconnecting before the venue's connection age limit "
                               f"({max_age:.0f} s)", immediate=True, cause="max_age")
            self.core.tick(now, time.time_ns())
            self._drain()


def options_doc(extra: Mapping[str, Any] | None = None) -> str:
    """One line per option and default, for ``--help``."""
    opts = {**RUNNER_OPTIONS, **(extra or {})}
    return ", ".join(f"{k}={v}" for k, v in opts.items())
