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
  s marks every symbol ``stale`` and reconnects. A quiet symbol on a live connection is not stale.
* Reconnect delays come from :func:`common.feed.backoff.backoff`; a fresh generator (a reset) is
  made only after a synced book was published on the connection that just ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import requests
import websockets
import zmq
import zmq.asyncio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from common import bus
from common.config import ConfigError, VenueConfig
from common.feed import rest
from common.feed.actions import Action, Fetch, Reconnect, Send
from common.feed.backoff import backoff
from common.feed.core import FeedCore
from common.feed.spec import FeedSpec
from common.feed.stream import SymbolStream
from common.feed.types import ParseError
from common.logs import Counters, RateLimitedLog
from common.schema import DOWN, STALE, SYNCING, BusError, FeedMsg, decode_snapshot_request, encode_feed
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
}

HEARTBEAT_PERIOD = 1.0  # s between HeartbeatMsg on the bus
TICK = 0.25             # s between the core's timeout checks

#: MAXMSGSIZE of the ctl ROUTER: a snapshot request is a list of symbols (a few hundred bytes); a
#: peer that sends more is disconnected by ZeroMQ (counted as ``ctl_disconnects``).
CTL_MAX_MSG_SIZE = 1 << 16
#: MAXMSGSIZE of the feed PUB, which receives only subscriptions (``md.``, ``hb.``).
PUB_MAX_MSG_SIZE = bus.SUBSCRIPTION_MAX
#: Most frames of a snapshot request: identity, an optional empty delimiter (REQ), the request.
CTL_MAX_FRAMES = 4


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


class LiveConnection(ClientConnection):
    """A client connection that remembers when it last heard anything from the server, control
    frames included (websockets answers pings itself, so this is where pings become visible)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_heard = time.monotonic()
        self.pings = 0

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        self.last_heard = time.monotonic()
        if isinstance(event, WsFrame) and event.opcode is Opcode.PING:
            self.pings += 1


@dataclass
class Outcome:
    """How a connection ended: the status its symbols get, why, and whether to skip the backoff."""

    status: str
    reason: str
    immediate: bool = False


class _End(Exception):
    """The core asked to end the connection."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class FeedRunner:
    """Run one venue's feed until :meth:`stop`. See the module docstring for the life cycle."""

    def __init__(self, spec: FeedSpec, cfg: VenueConfig, *, max_msg_size: int = 64 * 1024 * 1024,
                 log: logging.Logger | None = None, rng: random.Random | None = None,
                 sec: Security | None = None) -> None:
        self.sec = sec                 # CURVE (common/security.py) on both sockets when set
        self.spec = spec
        self.cfg = cfg
        self.opts = resolve_options(spec, cfg)
        self.max_msg_size = max_msg_size
        self.rng = rng or random.Random()
        self.core = FeedCore(spec, cfg, self.opts, sess=time.time_ns(), log=log, rng=self.rng)
        self.connects = 0
        self.delays_slept: list[float] = []
        self._stop: asyncio.Event | None = None
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "bookmux-feed"
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rest")
        self._rest_sem: asyncio.Semaphore | None = None
        self._zctx: zmq.Context | None = None
        self._pub: zmq.Socket | None = None
        self._ws: LiveConnection | None = None
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._flush_scheduled = False
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
        self._rest_sem = asyncio.Semaphore(int(self.opts["rest_concurrency"]))
        self._zctx = zmq.Context()
        actx = zmq.asyncio.Context.shadow(self._zctx)
        self._pub = bus.pub(self.cfg.pub, ctx=self._zctx, sec=self.sec)
        router = cast(zmq.asyncio.Socket, bus.router(self.cfg.ctl, max_msg_size=CTL_MAX_MSG_SIZE, ctx=actx,
                                                     sec=self.sec))
        self.log.info("%s feed session %d: pub %s, ctl %s, symbols %s", self.cfg.id, self.sess,
                      self.cfg.pub, self.cfg.ctl, ", ".join(self.symbols))
        tasks: list[asyncio.Task[Any]] = []
        try:
            self.core.start(time.time_ns())
            self._publish()
            tasks = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                     asyncio.create_task(self._ctl_loop(router), name="ctl"),
                     asyncio.create_task(self._monitor(self._pub, actx, "pub", PUB_MAX_MSG_SIZE),
                                         name="pub monitor"),
                     asyncio.create_task(self._monitor(router, actx, "ctl", CTL_MAX_MSG_SIZE),
                                         name="ctl monitor")]
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
            self._cancel_fetches()
            await asyncio.gather(*tasks, return_exceptions=True)
            for st in self.symbols.values():
                if st.listed:
                    self.core.out.status(st, DOWN, "feed stopping", time.time_ns())
            self._publish()
            router.close(linger=0)
            self._pub.close(linger=200)
            if self.sec is not None:
                self.sec.close()
            self._zctx.term()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._session.close()
            self.log.info("%s feed stopped; counters %s", self.cfg.id, dict(self.counters))

    async def _main(self) -> None:
        await self._pair_check()
        await self._connection_loop()

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` s unless stopped first; True when stopped."""
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    async def _get(self, url: str) -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, rest.get_text, self._session, url,
                                          float(self.opts["rest_timeout"]))

    # --- core outputs -------------------------------------------------------------------------

    def _publish(self) -> None:
        """Send what the core queued for the bus, and schedule a flush of coalesced updates."""
        for msg in self.core.take_bus():
            self._put(msg)
        if self.core.pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.core.flush()
        for msg in self.core.take_bus():
            self._put(msg)

    def _put(self, msg: FeedMsg) -> None:
        assert self._pub is not None
        try:
            self._pub.send_multipart(encode_feed(msg), flags=zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - PUB drops rather than blocks
            self.counters["bus_dropped"] += 1

    def _drain(self) -> None:
        """After any input to the core: publish its bus messages, start the fetches it asks for,
        and hand Send/Reconnect to the connection task (which owns the WebSocket)."""
        self._publish()
        for a in self.core.take_actions():
            if isinstance(a, Fetch):
                self._start_fetch(a)
            elif self._conn_actions is not None:
                self._conn_actions.put_nowait(a)

    # --- REST snapshots -----------------------------------------------------------------------

    def _start_fetch(self, f: Fetch) -> None:
        old = self._fetches.get(f.symbol)
        if old is not None and not old.done() and old is not asyncio.current_task():
            old.cancel()
        self._fetches[f.symbol] = asyncio.create_task(self._fetch(f), name=f"snapshot {f.symbol}")

    def _cancel_fetches(self) -> None:
        for t in self._fetches.values():
            t.cancel()
        self._fetches.clear()

    async def _fetch(self, f: Fetch) -> None:
        assert self._rest_sem is not None and self.spec.snapshot_url is not None
        if f.delay > 0:
            await asyncio.sleep(f.delay)
        st = self.symbols[f.symbol]
        url = self.spec.snapshot_url(self.cfg, st.key)
        try:
            async with self._rest_sem:
                body, rts = await self._get(url)
        except rest.RateLimited as e:
            self.core.snapshot_failed(f.symbol, str(e), e.delay)
        except rest.RestError as e:
            self.core.snapshot_failed(f.symbol, str(e))
        else:
            self.core.snapshot_body(f.symbol, body, rts)
        self._drain()

    # --- bus services -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        counters = Counters(self.log)
        while True:
            self.core.heartbeat(time.time_ns())
            self._publish()
            counters.clear()
            counters.update(self.counters)
            counters.maybe_log()
            await asyncio.sleep(HEARTBEAT_PERIOD)

    async def _monitor(self, sock: zmq.Socket, actx: zmq.asyncio.Context, name: str, limit: int) -> None:
        """Count (``<name>_disconnects``) and log every peer disconnection of ``sock``: a peer that
        sends a message over ``limit`` bytes (MAXMSGSIZE) is disconnected by ZeroMQ and shows here;
        so does a peer that simply went away (ZeroMQ does not tell the two apart)."""
        addr = f"inproc://monitor.{name}.{id(sock)}"
        sock.monitor(addr, zmq.EVENT_DISCONNECTED)
        mon = actx.socket(zmq.PAIR)
        mon.setsockopt(zmq.LINGER, 0)
        mon.connect(addr)
        try:
            while True:
                frames = await mon.recv_multipart()
                if len(frames) != 2 or len(frames[0]) < 6:
                    continue
                if int.from_bytes(frames[0][:2], "little") != zmq.EVENT_DISCONNECTED:
                    continue
                self.counters[f"{name}_disconnects"] += 1
                self.core.rlog.warning(f"{name}_disconnect", "%s: %s peer %s disconnected (%d so far; ZeroMQ "
                                       "disconnects a peer that sends more than %d bytes)", self.cfg.id, name,
                                       frames[1].decode(errors="replace")[:60],
                                       self.counters[f"{name}_disconnects"], limit)
        finally:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            mon.close(linger=0)

    async def _ctl_loop(self, router: zmq.asyncio.Socket) -> None:
        """Answer ``snapreq`` on the ROUTER: one frame per symbol (schema docstring)."""
        while True:
            frames = await router.recv_multipart()
            if not 2 <= len(frames) <= CTL_MAX_FRAMES:
                # MAXMSGSIZE bounds each frame, not their number: a long envelope is garbage too.
                self.counters["ctl_bad_request"] += 1
                self.core.rlog.warning("ctl", "%s: snapshot request of %d frames dropped", self.cfg.id,
                                       len(frames))
                continue
            try:
                wanted = decode_snapshot_request(frames[-1])
            except BusError as e:
                self.counters["ctl_bad_request"] += 1
                self.core.rlog.warning("ctl", "%s: bad snapshot request dropped: %s", self.cfg.id, e)
                continue
            self.counters["ctl_requests"] += 1
            reply = self.snapshot_reply(wanted)
            await router.send_multipart([*frames[:-1], *reply])

    def snapshot_reply(self, wanted: list[str]) -> list[bytes]:
        """The reply frames for a snapshot request (all symbols when ``wanted`` is empty)."""
        reply = self.core.snapshot_reply(wanted, time.time_ns())
        self._publish()     # deltas the reply flushed go out before anything newer
        return reply

    # --- pair check ---------------------------------------------------------------------------

    async def _pair_check(self) -> None:
        """Mark symbols the venue does not list (or does not trade) ``down``; the rest go on.
        When the pair list cannot be had, every symbol goes on unchecked (logged)."""
        if not self.opts["pair_check"]:
            return
        url = self.spec.pairs_url(self.cfg)
        if url is None:
            return
        delays = backoff(initial=1.0, cap=10.0, rng=self.rng)
        pairs = None
        for attempt in range(1, 4):
            try:
                body, _ = await self._get(url)
                pairs = self.spec.parse_pairs(body)
                break
            except rest.RateLimited as e:
                self.log.warning("%s: pair list %s: HTTP %s; not retrying at start-up", self.cfg.id, url,
                                 e.status)
                break
            except rest.RestError as e:
                if e.status is not None and 400 <= e.status < 500:
                    self.log.warning("%s: pair list unavailable: %s", self.cfg.id, e)
                    break
                d = next(delays)
                self.log.warning("%s: pair list attempt %d failed: %s; retrying in %.3f s",
                                 self.cfg.id, attempt, e, d)
                if await self._sleep(d):
                    return
            except ParseError as e:
                self.log.warning("%s: pair list from %s does not parse: %s", self.cfg.id, url, e)
                break
        if pairs is None:
            self.log.warning("%s: carrying %s WITHOUT a pair check", self.cfg.id, ", ".join(self.symbols))
            return
        for st in self.symbols.values():
            info = pairs.get(st.symbol)
            if info is None or not info.trading:
                why = ("not listed" if info is None
                       else f"listed as {info.key} but not trading (status {info.status!r})")
                self.log.error("%s: symbol %s is %s by the venue (pair list %s); it is not carried",
                               self.cfg.id, st.symbol, why, url)
                self.core.unlist(st, f"{why} by {self.cfg.id}", time.time_ns())
                continue
            if info.key != st.key:
                self.log.info("%s: %s is %s on the venue (pair list)", self.cfg.id, st.symbol, info.key)
                self.core.rekey(st, info.key)
        self._publish()
        listed = [s for s, st in self.symbols.items() if st.listed]
        self.log.info("%s: pair check done: %d of %d symbols listed (%s)", self.cfg.id, len(listed),
                      len(self.symbols), ", ".join(listed) or "none")

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
            self._cancel_fetches()
            self.core.disconnected(outcome.status, outcome.reason, time.time_ns())
            self._publish()
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
                max_size=self.max_msg_size, create_connection=LiveConnection)
        except (OSError, WebSocketException, TimeoutError) as e:
            return Outcome(DOWN, f"connect to {url[:120]} failed: {type(e).__name__}: {e}")
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
                    return Outcome(a.status, a.reason, a.immediate)
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")

    async def _read(self, ws: LiveConnection) -> Outcome:
        core = self.core
        try:
            async for text in ws:
                core.frame(text, time.time_ns(), time.monotonic())
                self._drain()
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")
        return Outcome(DOWN, f"connection closed by the venue: {ws.close_code} {ws.close_reason!r}")

    async def _keepalive(self, ws: LiveConnection) -> Outcome:
        """Our WebSocket pings (their pongs are liveness) and the venue's application heartbeat."""
        ping_every = float(self.opts["ping_every"])
        hb_frame = self.spec.heartbeat_frame
        hb_every = float(self.opts["heartbeat_every"])
        now = time.monotonic()
        next_ping, next_hb = now + ping_every, now + hb_every
        try:
            while True:
                await asyncio.sleep(max(0.0, min(next_ping, next_hb if hb_frame else next_ping)
                                        - time.monotonic()))
                now = time.monotonic()
                if now >= next_ping:
                    await ws.ping()
                    next_ping = now + ping_every
                if hb_frame and now >= next_hb:
                    await ws.send(hb_frame)
                    next_hb = now + hb_every
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection lost: {e}")

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
                return Outcome(STALE, f"no frame or ping for {idle:.1f} s (stale_after {stale_after} s)")
            if max_age and now - started > max_age:
                self.counters["max_age_reconnects"] += 1
                return Outcome(SYNCING, f"reconnecting before the venue's connection age limit "
                               f"({max_age:.0f} s)", immediate=True)
            self.core.tick(now, time.time_ns())
            self._drain()


def options_doc(extra: Mapping[str, Any] | None = None) -> str:
    """One line per option and default, for ``--help``."""
    opts = {**RUNNER_OPTIONS, **(extra or {})}
    return ", ".join(f"{k}={v}" for k, v in opts.items())
