"""The one feed runner every venue uses: all the I/O of a feed process, none of the venue rules.

Per process: one WebSocket connection carrying every configured symbol of one venue, a PUB socket
(``VenueConfig.pub``, bound) for the feed bus and a ROUTER (``VenueConfig.ctl``, bound) answering
snapshot requests, both laid out in :mod:`common.schema`.

Life of a connection::

    connect -> send subscribe frames -> every symbol: status "syncing", buffer events,
    fetch the REST snapshot (off the loop) -> sequencer says SYNCED -> publish SNAP (= live)
    -> every applied event: publish DELTA ... -> connection lost / stale / venue asks to
    reconnect -> every symbol "down" or "stale" -> sleep the next backoff delay -> connect again

* A gap, a malformed update or a crossed book resyncs that symbol only (status ``syncing``, a new
  snapshot, then a new SNAP); the other symbols of the connection go on.
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
from dataclasses import dataclass, field
from decimal import Decimal
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
from common.book import ASK, BID, Book
from common.config import ConfigError, VenueConfig
from common.feed import rest
from common.feed.backoff import backoff
from common.feed.spec import FeedSpec, Sequencer
from common.feed.types import Control, ControlKind, DepthEvent, ParseError, Verdict
from common.logs import Counters
from common.schema import (
    DELTA,
    DOWN,
    LIVE,
    SNAP,
    STALE,
    SYNCING,
    BookMsg,
    BusError,
    FeedMsg,
    HeartbeatMsg,
    StatusMsg,
    decode_snapshot_request,
    encode_feed,
    feed_payload,
    pack,
)
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
}

HEARTBEAT_PERIOD = 1.0  # s between HeartbeatMsg on the bus

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


@dataclass
class SymbolState:
    symbol: str
    key: str
    seqr: Sequencer
    book: Book = field(default_factory=Book)
    seq: int = 0
    status: str = SYNCING
    reason: str = "starting"
    listed: bool = True
    ets: int = 0
    rts: int = 0
    sync_task: asyncio.Task[None] | None = None


class RateLimitedLog:
    """Log a warning per key at most once every ``every`` seconds, counting what it held back."""

    def __init__(self, log: logging.Logger, every: float = 5.0) -> None:
        self._log = log
        self._every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self._every:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, held, self._every)
        self._log.warning(msg, *args)


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
        self.log = log or logging.getLogger(f"feed.{cfg.id}")
        self.rlog = RateLimitedLog(self.log)
        self.rng = rng or random.Random()
        self.sess = time.time_ns()
        self.counters = Counters(self.log)
        self.symbols: dict[str, SymbolState] = {
            s: SymbolState(s, spec.key_of(s), spec.sequencer()) for s in cfg.symbols}
        self.by_key: dict[str, SymbolState] = {st.key: st for st in self.symbols.values()}
        self.connects = 0
        self.delays_slept: list[float] = []
        self._synced_on_conn = False
        self._stop: asyncio.Event | None = None
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "bookmux-feed"
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rest")
        self._rest_sem: asyncio.Semaphore | None = None
        self._zctx: zmq.Context | None = None
        self._pub: zmq.Socket | None = None
        # symbol -> (state, bids, asks, [ets, rts]): applied, not yet published (see _queue_delta)
        self._pending: dict[str, tuple[SymbolState, dict[Decimal, Decimal], dict[Decimal, Decimal], list[int]]] = {}
        self._flush_scheduled = False

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
            for st in self.symbols.values():
                self._publish_status(st, SYNCING, "starting")
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
            for st in self.symbols.values():
                self._cancel_sync(st)
            await asyncio.gather(*tasks, return_exceptions=True)
            for st in self.symbols.values():
                if st.listed:
                    self._publish_status(st, DOWN, "feed stopping")
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

    # --- bus ----------------------------------------------------------------------------------

    def _send(self, msg: FeedMsg) -> None:
        """Publish one bus message; queued deltas go out first, so each stream stays in order."""
        if self._pending:
            self._flush()
        self._put(msg)

    def _put(self, msg: FeedMsg) -> None:
        assert self._pub is not None
        try:
            self._pub.send_multipart(encode_feed(msg), flags=zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - PUB drops rather than blocks
            self.counters["bus_dropped"] += 1

    def _queue_delta(self, st: SymbolState, ev: DepthEvent, rts: int) -> None:
        """Queue an applied event's levels; every event applied in this turn of the event loop
        goes out as ONE delta per symbol (later sizes of a price replace earlier ones: sizes are
        absolute), flushed as soon as the loop is free. Idle, that is right after the frame; under
        load it cuts bus messages, ZeroMQ wake-ups and the aggregator's per-message cost."""
        p = self._pending.get(st.symbol)
        if p is None:
            p = self._pending[st.symbol] = (st, {}, {}, [0, 0])
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        _, bids, asks, stamps = p
        for price, qty in ev.bids:
            bids[price] = qty
        for price, qty in ev.asks:
            asks[price] = qty
        stamps[0], stamps[1] = ev.ets, rts

    def _flush(self) -> None:
        """Publish the queued deltas (one per symbol, in the order the symbols first queued)."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for st, bids, asks, (ets, rts) in pending.values():
            st.seq += 1
            self._put(BookMsg(DELTA, self.cfg.id, st.symbol, self.sess, st.seq, ets, rts,
                              list(bids.items()), list(asks.items())))
        if len(pending) > 0:
            self.counters["deltas_published"] += len(pending)

    def _publish_status(self, st: SymbolState, status: str, reason: str, rts: int | None = None) -> None:
        if self._pending:
            self._flush()
        st.seq += 1
        st.status = status
        st.reason = reason
        self._send(StatusMsg(self.cfg.id, st.symbol, self.sess, st.seq, status, reason,
                             rts or time.time_ns()))
        log = self.log.warning if status in (STALE, DOWN) else self.log.info
        log("%s %s: status %s (%s)", self.cfg.id, st.symbol, status, reason)

    def _set_status(self, st: SymbolState, status: str, reason: str) -> None:
        """Publish a status when it changes (a listed symbol only)."""
        if st.listed and st.status != status:
            self._publish_status(st, status, reason)

    def _snap_msg(self, st: SymbolState) -> BookMsg:
        return BookMsg(SNAP, self.cfg.id, st.symbol, self.sess, st.seq, st.ets, st.rts,
                       st.book.levels(BID), st.book.levels(ASK))

    async def _heartbeat_loop(self) -> None:
        while True:
            self._send(HeartbeatMsg(self.cfg.id, self.sess, time.time_ns(),
                                    {s: st.seq for s, st in self.symbols.items()}))
            self.counters.maybe_log()
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
                self.rlog.warning(f"{name}_disconnect", "%s: %s peer %s disconnected (%d so far; ZeroMQ "
                                  "disconnects a peer that sends more than %d bytes)", self.cfg.id, name,
                                  frames[1].decode(errors="replace")[:60], self.counters[f"{name}_disconnects"],
                                  limit)
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
                self.rlog.warning("ctl", "%s: snapshot request of %d frames dropped", self.cfg.id, len(frames))
                continue
            try:
                wanted = decode_snapshot_request(frames[-1])
            except BusError as e:
                self.counters["ctl_bad_request"] += 1
                self.rlog.warning("ctl", "%s: bad snapshot request dropped: %s", self.cfg.id, e)
                continue
            self.counters["ctl_requests"] += 1
            await router.send_multipart([*frames[:-1], *self.snapshot_reply(wanted)])

    def snapshot_reply(self, wanted: list[str]) -> list[bytes]:
        """The reply frames for a snapshot request (all symbols when ``wanted`` is empty)."""
        if self._pending:
            self._flush()      # the reply's seq must cover every change already in the book
        out = []
        for s in dict.fromkeys(wanted) if wanted else list(self.symbols):   # each symbol once
            st = self.symbols.get(s)
            msg: FeedMsg
            if st is None:
                msg = StatusMsg(self.cfg.id, s, self.sess, 0, DOWN, "symbol not carried by this feed",
                                time.time_ns())
            elif st.status == LIVE:
                msg = self._snap_msg(st)
            else:
                msg = StatusMsg(self.cfg.id, s, self.sess, st.seq, st.status, st.reason, time.time_ns())
            out.append(pack(feed_payload(msg)))
        return out

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
                self._publish_status(st, DOWN, f"{why} by {self.cfg.id}")
                st.listed = False
                continue
            if info.key != st.key:
                self.log.info("%s: %s is %s on the venue (pair list)", self.cfg.id, st.symbol, info.key)
                del self.by_key[st.key]
                st.key = info.key
                self.by_key[st.key] = st
        listed = [s for s, st in self.symbols.items() if st.listed]
        self.log.info("%s: pair check done: %d of %d symbols listed (%s)", self.cfg.id, len(listed),
                      len(self.symbols), ", ".join(listed) or "none")

    # --- connection ---------------------------------------------------------------------------

    def _new_backoff(self) -> Any:
        return backoff(initial=float(self.opts["backoff_initial"]), cap=float(self.opts["backoff_cap"]),
                       jitter=float(self.opts["backoff_jitter"]), rng=self.rng)

    async def _connection_loop(self) -> None:
        assert self._stop is not None
        active = [st for st in self.symbols.values() if st.listed]
        if not active:
            self.log.error("%s: no symbol to carry; idling (heartbeats and status only)", self.cfg.id)
            await self._stop.wait()
            return
        keys = [st.key for st in active]
        url = self.spec.ws_url(self.cfg, keys)
        delays = self._new_backoff()
        failures = 0
        while not self._stop.is_set():
            self._synced_on_conn = False
            outcome = await self._one_connection(url, keys, active)
            for st in active:
                self._cancel_sync(st)
                st.book.clear()
                self._set_status(st, outcome.status, outcome.reason)
            if self._stop.is_set():
                break
            if self._synced_on_conn:
                delays = self._new_backoff()
                failures = 0
            failures += 0 if outcome.immediate else 1
            delay = 0.0 if outcome.immediate else next(delays)
            self.log.warning("%s: connection ended (%s); reconnecting in %.3f s (failure %d since the "
                             "last synced book)", self.cfg.id, outcome.reason, delay, failures)
            self.delays_slept.append(delay)
            if await self._sleep(delay):
                break

    async def _one_connection(self, url: str, keys: list[str], active: list[SymbolState]) -> Outcome:
        self.connects += 1
        try:
            ws = await websockets.connect(
                url, open_timeout=float(self.opts["open_timeout"]), ping_interval=None, close_timeout=1.0,
                max_size=self.max_msg_size, create_connection=LiveConnection)
        except (OSError, WebSocketException, TimeoutError) as e:
            return Outcome(DOWN, f"connect to {url[:120]} failed: {type(e).__name__}: {e}")
        assert isinstance(ws, LiveConnection)
        self.log.info("%s: connected to %s (%d symbols)", self.cfg.id, url[:200], len(keys))
        started = time.monotonic()
        tasks: list[asyncio.Task[Outcome]] = []
        try:
            frames = self.spec.subscribe(self.cfg, keys)
            for f in frames:
                await ws.send(f)
            if frames:
                self.log.info("%s: sent %d subscribe frame(s)", self.cfg.id, len(frames))
            for st in active:
                self._resync(st, "connected: building the book")
            tasks = [asyncio.create_task(self._read(ws)), asyncio.create_task(self._keepalive(ws)),
                     asyncio.create_task(self._watchdog(ws, started))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        except ConnectionClosed as e:
            return Outcome(DOWN, f"connection closed: {e}")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
            self.counters["ws_pings_received"] += ws.pings

    async def _read(self, ws: LiveConnection) -> Outcome:
        try:
            async for text in ws:
                out = self.on_frame(text, time.time_ns())
                if out is not None:
                    return out
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

    async def _watchdog(self, ws: LiveConnection, started: float) -> Outcome:
        stale_after = self.cfg.stale_after
        max_age = self.opts["max_conn_age"]
        tick = min(0.5, stale_after / 5)
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

    # --- frames -------------------------------------------------------------------------------

    def on_frame(self, text: str | bytes, rts: int) -> Outcome | None:
        """Handle one received frame (read at ``rts`` ns); an Outcome ends the connection."""
        try:
            fr = self.spec.parse_frame(text)
        except ParseError as e:
            self.counters["malformed"] += 1
            self.rlog.warning("malformed", "%s: malformed frame dropped: %s", self.cfg.id, e)
            st = self.by_key.get(e.key) if e.key is not None else None
            if st is not None and st.listed:
                self.counters["resync_malformed"] += 1
                self._resync(st, f"malformed update dropped: {e}")
            return None
        if isinstance(fr, Control):
            return self._on_control(fr)
        if not isinstance(fr, DepthEvent):
            raise TypeError(f"this runner takes one DepthEvent or Control per frame, not {type(fr).__name__}")
        st = self.by_key.get(fr.key)
        if st is None or not st.listed:
            self.counters["unknown_symbol"] += 1
            return None
        self._on_event(st, fr, rts)
        return None

    def _on_control(self, c: Control) -> Outcome | None:
        if c.kind is ControlKind.RECONNECT:
            self.counters["venue_reconnect_requests"] += 1
            return Outcome(DOWN, f"venue asked to reconnect: {c.detail}")
        if c.kind is ControlKind.ERROR:
            self.counters["venue_errors"] += 1
            self.rlog.warning("venue_error", "%s: venue error: %s", self.cfg.id, c.detail)
        elif c.kind is ControlKind.ACK:
            self.log.info("%s: subscribed %s", self.cfg.id, c.detail)
        elif c.kind is ControlKind.HEARTBEAT:
            self.counters["heartbeat_replies"] += 1
        return None

    def _on_event(self, st: SymbolState, ev: DepthEvent, rts: int) -> None:
        before = st.seqr.position
        v = st.seqr.on_event(ev)
        if v is Verdict.APPLY:
            st.book.apply_levels(ev.bids, ev.asks)
            if self.spec.resync_on_crossed and st.book.crossed():
                self.counters["resync_crossed"] += 1
                bid, ask = st.book.best()
                self.log.warning("%s %s: book crossed after %s %d (bid %s >= ask %s); resyncing",
                                 self.cfg.id, st.symbol, self.spec.id_name, ev.last,
                                 bid[0] if bid else None, ask[0] if ask else None)
                self._resync(st, "crossed book")
                return
            st.ets, st.rts = ev.ets, rts
            self._queue_delta(st, ev, rts)
        elif v is Verdict.DROP:
            self.counters["dropped_stale"] += 1
        elif v is Verdict.BUFFERED:
            self.counters["buffered"] += 1
        elif v is Verdict.GAP:
            self.counters["gaps"] += 1
            self.log.warning("%s %s: gap: event %s %d..%d does not follow the book at %s; resyncing",
                             self.cfg.id, st.symbol, self.spec.id_name, ev.first, ev.last, before)
            self._resync(st, f"gap before {self.spec.id_name} {ev.first}", reset=False)

    # --- sync ---------------------------------------------------------------------------------

    def _cancel_sync(self, st: SymbolState) -> None:
        if st.sync_task is not None and not st.sync_task.done():
            st.sync_task.cancel()
        st.sync_task = None

    def _resync(self, st: SymbolState, reason: str, *, reset: bool = True) -> None:
        """Throw this symbol's book away and build it again (the other symbols go on)."""
        if reset:
            st.seqr.reset()
        st.book.clear()
        self._set_status(st, SYNCING, reason)
        if st.sync_task is None or st.sync_task.done():
            st.sync_task = asyncio.create_task(self._sync(st), name=f"sync {st.symbol}")

    async def _sync(self, st: SymbolState) -> None:
        """Fetch snapshots until the sequencer accepts one, then publish the SNAP."""
        assert self._rest_sem is not None
        t0 = time.monotonic()
        delays = backoff(initial=0.25, cap=float(self.opts["snapshot_retry_cap"]), rng=self.rng)
        name = self.spec.id_name
        fetches = 0
        while True:
            assert self.spec.snapshot_url is not None and self.spec.parse_snapshot is not None
            url = self.spec.snapshot_url(self.cfg, st.key)
            try:
                async with self._rest_sem:
                    body, rts = await self._get(url)
                snap = self.spec.parse_snapshot(body, st.key)
            except rest.RateLimited as e:
                self.counters["rest_rate_limited"] += 1
                self.log.warning("%s %s: snapshot: %s; waiting %.1f s as the venue asks", self.cfg.id,
                                 st.symbol, e, e.delay)
                await asyncio.sleep(e.delay)
                continue
            except (rest.RestError, ParseError) as e:
                self.counters["snapshot_errors"] += 1
                d = next(delays)
                self.log.warning("%s %s: snapshot failed: %s; retrying in %.3f s", self.cfg.id, st.symbol,
                                 e, d)
                await asyncio.sleep(d)
                continue
            fetches += 1
            nbuf = st.seqr.buffered
            verdict, events = st.seqr.on_snapshot(snap)
            self.log.info("%s %s: snapshot fetched: %s %d, %d bids / %d asks, %d events buffered -> %s",
                          self.cfg.id, st.symbol, name, snap.last, len(snap.bids), len(snap.asks), nbuf,
                          verdict.value)
            if verdict is Verdict.REFETCH:
                self.counters["snapshot_refetch"] += 1
                d = next(delays)
                self.log.info("%s %s: snapshot %s %d is not proven current (older than the first buffered "
                              "event, or no event buffered yet); refetching in %.3f s", self.cfg.id, st.symbol,
                              name, snap.last, d)
                await asyncio.sleep(d)
                continue
            if verdict is Verdict.GAP:
                self.counters["gaps"] += 1
                self.log.warning("%s %s: gap inside the buffered events after %s %d; refetching",
                                 self.cfg.id, st.symbol, name, snap.last)
                continue
            st.book.load(snap.bids, snap.asks)
            for ev in events:
                st.book.apply_levels(ev.bids, ev.asks)
            if self.spec.resync_on_crossed and st.book.crossed():
                self.counters["resync_crossed"] += 1
                self.log.warning("%s %s: book crossed right after sync at %s %d; refetching", self.cfg.id,
                                 st.symbol, name, events[-1].last if events else snap.last)
                st.seqr.reset()
                st.book.clear()
                await asyncio.sleep(next(delays))
                continue
            st.ets = events[-1].ets if events else snap.ets
            st.rts = rts
            if self._pending:
                self._flush()
            st.seq += 1
            st.status, st.reason = LIVE, "synced"
            self._send(self._snap_msg(st))
            self._synced_on_conn = True
            self.counters["syncs"] += 1
            self.log.info("%s %s: synced after %.0f ms (%d fetch(es)): %s %d, %d buffered events applied, "
                          "%d bids / %d asks", self.cfg.id, st.symbol, (time.monotonic() - t0) * 1000,
                          fetches, name, events[-1].last if events else snap.last, len(events),
                          len(st.book.bids), len(st.book.asks))
            return


def options_doc(extra: Mapping[str, Any] | None = None) -> str:
    """One line per option and default, for ``--help``."""
    opts = {**RUNNER_OPTIONS, **(extra or {})}
    return ", ".join(f"{k}={v}" for k, v in opts.items())
