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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException
from websockets.frames import CloseCode, Opcode
from websockets.frames import Frame as WsFrame
from websockets.protocol import State

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

#: permessage-deflate is not offered: market-data frames are a few hundred bytes, and inflating
#: each one cost ~9 % of a feed's CPU per frame (py-spy, 10x, issue 12) for little bandwidth saved.
WS_COMPRESSION: str | None = None


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


async def keepalive(ws: ClientConnection, ping_every: float, hb_frame: str | None, hb_every: float) -> None:
    """Ping every ``ping_every`` s and send ``hb_frame`` every ``hb_every`` s, until the connection
    closes (ConnectionClosed)."""
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


class LiveConnection(ClientConnection):
    """A client connection that remembers when it last heard anything from the server, control
    frames included (websockets answers pings itself, so this is where pings become visible), and
    hands every received message to the feed as soon as the library has parsed it.

    Delivery (measured, issue 12): websockets' own ``recv()`` queues each message in its assembler
    and wakes the reading task through a future, one event-loop round trip per frame. Here each
    data frame the protocol parsed is given to ``on_message(data, rts, now)`` right inside
    ``data_received`` (same order, same UTF-8 rule: a text frame that is not UTF-8 fails the
    connection with 1007 as ``recv()`` does), and ``on_batch()`` runs once after every frame of
    that read: the feed publishes once per read, not once per frame. ``rts`` and ``now`` are taken
    once per read. Frames that arrive before :meth:`deliver` is called wait for it; after
    :meth:`stop_delivery` they are dropped (the connection is ending). Size limits, control frames,
    compression and the closing handshake stay the library's. An exception in a callback ends the
    connection and is raised from :attr:`ended`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_heard = time.monotonic()
        self.pings = 0
        self.on_message: Callable[[str | bytes, int, float], None] | None = None
        self.on_batch: Callable[[], None] | None = None
        self.ended: asyncio.Future[None] | None = None
        self._early: list[tuple[str | bytes, int, float]] | None = []
        self._parts: list[WsFrame] = []
        self._rts = time.time_ns()
        self._now = self.last_heard
        self._got = 0

    def deliver(self, on_message: Callable[[str | bytes, int, float], None], on_batch: Callable[[], None]) -> None:
        """Start delivering messages (those that arrived since the handshake first)."""
        self.ended = self.loop.create_future()
        early, self._early = self._early or [], None
        self.on_message, self.on_batch = on_message, on_batch
        if self.protocol.state is State.CLOSED:
            self._end(None)
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

    def _end(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.on_message = self.on_batch = None
            self.transport.abort()
        if self.ended is not None and not self.ended.done():
            if exc is None:
                self.ended.set_result(None)
            else:
                self.ended.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        self._now = time.monotonic()
        self._rts = time.time_ns()
        self._got = 0
        super().data_received(data)
        if self._got:
            self.last_heard = self._now
            if self.on_batch is not None:
                try:
                    self.on_batch()
                except Exception as e:  # handed to the reading task
                    self._end(e)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end(None)

    def process_event(self, event: Any) -> None:
        self._got += 1
        if type(event) is WsFrame and self.response is not None:
            op = event.opcode
            if op is Opcode.TEXT or op is Opcode.BINARY or op is Opcode.CONT:
                self._data(event)
                return
            if op is Opcode.PING:
                self.pings += 1
        else:
            self.last_heard = time.monotonic()
        super().process_event(event)

    def _data(self, frame: WsFrame) -> None:
        if frame.opcode is Opcode.CONT:
            if not self._parts:     # pragma: no cover - the protocol refuses a stray continuation
                return
            self._parts.append(frame)
            if not frame.fin:
                return
            parts, self._parts = self._parts, []
            opcode, data = parts[0].opcode, b"".join([f.data for f in parts])
        elif not frame.fin:
            self._parts = [frame]
            return
        else:
            opcode, data = frame.opcode, bytes(frame.data) if type(frame.data) is not bytes else frame.data
        msg: str | bytes
        if opcode is Opcode.TEXT:
            try:
                msg = data.decode()
            except UnicodeDecodeError as e:
                self.set_connection_exc(e)
                self.protocol.fail(CloseCode.INVALID_DATA, f"{e.reason} at position {e.start}")
                self.send_data()
                return
        else:
            msg = data
        if self.on_message is not None:
            try:
                self.on_message(msg, self._rts, self._now)
            except Exception as e:  # handed to the reading task
                self._end(e)
        elif self._early is not None:
            self._early.append((msg, self._rts, self._now))


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
        self._ws: LiveConnection | None = None
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
            ws = await websockets.connect(
                url, open_timeout=float(self.opts["open_timeout"]), ping_interval=None, close_timeout=1.0,
                max_size=self.max_msg_size, compression=WS_COMPRESSION,
                create_connection=LiveConnection)
        except (OSError, WebSocketException, TimeoutError) as e:
            return Outcome(DOWN, f"connect to {url[:120]} failed: {type(e).__name__}: {e}", cause="connect_failed")
        assert isinstance(ws, LiveConnection)
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
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection closed: {e}")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._ws = None
            self._conn_actions = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
            self.counters["ws_pings_received"] += ws.pings

    async def _actions(self, ws: LiveConnection) -> Outcome:
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
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")

    async def _read(self, ws: LiveConnection) -> Outcome:
        """Feed every received message to the core (from inside the connection's
        ``data_received``, see :class:`LiveConnection`) until the connection ends."""
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
        assert ws.ended is not None
        try:
            await ws.ended
        finally:
            ws.stop_delivery()
        exc = ws.protocol.close_exc
        if isinstance(exc, ConnectionClosedOK):
            return Outcome(DOWN, f"connection closed by the venue: {ws.close_code} {ws.close_reason!r}")
        return Outcome(DOWN, f"connection lost: {exc}")

    async def _keepalive(self, ws: LiveConnection) -> Outcome:
        """Our WebSocket pings (their pongs are liveness) and the venue's application heartbeat."""
        try:
            await keepalive(ws, float(self.opts["ping_every"]), self.spec.heartbeat_frame,
                            float(self.opts["heartbeat_every"]))
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")
        raise AssertionError("keepalive returned")  # pragma: no cover

    async def _watchdog(self, ws: LiveConnection) -> Outcome:
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
