"""The feed's side of the bus: the PUB socket the core's messages go out on (with the delta
coalescing flush), the ROUTER answering snapshot requests, the bus heartbeat, and socket
monitors. Layouts are in :mod:`common.schema`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import zmq
import zmq.asyncio

from common import bus
from common.feed.core import FeedCore
from common.logs import Counters
from common.schema import BusError, FeedMsg, decode_snapshot_request, encode_feed
from common.security import Security

HEARTBEAT_PERIOD = 1.0  # s between HeartbeatMsg on the bus

#: MAXMSGSIZE of the ctl ROUTER: a snapshot request is a list of symbols (a few hundred bytes); a
#: peer that sends more is disconnected by ZeroMQ (counted as ``ctl_disconnects``).
CTL_MAX_MSG_SIZE = 1 << 16
#: MAXMSGSIZE of the feed PUB, which receives only subscriptions (``md.``, ``hb.``).
PUB_MAX_MSG_SIZE = bus.SUBSCRIPTION_MAX
#: Most frames of a snapshot request: identity, an optional empty delimiter (REQ), the request.
CTL_MAX_FRAMES = 4


class FeedBus:
    """PUB + ROUTER of one feed process around its :class:`FeedCore`."""

    def __init__(self, core: FeedCore, *, sec: Security | None = None) -> None:
        self.core = core
        self.cfg = core.cfg
        self.sec = sec
        self.counters = core.counters
        self._zctx: zmq.Context | None = None
        self._actx: zmq.asyncio.Context | None = None
        self._pub: zmq.Socket | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._flush_scheduled = False

    def open(self) -> list[asyncio.Task[Any]]:
        """Bind both sockets; return the tasks that serve them (heartbeat, ctl, monitors)."""
        self._zctx = zmq.Context()
        self._actx = actx = zmq.asyncio.Context.shadow(self._zctx)
        self._pub = bus.pub(self.cfg.pub, ctx=self._zctx, sec=self.sec)
        self._router = cast(zmq.asyncio.Socket, bus.router(self.cfg.ctl, max_msg_size=CTL_MAX_MSG_SIZE,
                                                           ctx=actx, sec=self.sec))
        return [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self._ctl_loop(self._router), name="ctl"),
                asyncio.create_task(self._monitor(self._pub, actx, "pub", PUB_MAX_MSG_SIZE), name="pub monitor"),
                asyncio.create_task(self._monitor(self._router, actx, "ctl", CTL_MAX_MSG_SIZE),
                                    name="ctl monitor")]

    def close(self) -> None:
        """Send what is left, then close the sockets (the PUB lingers briefly so it leaves)."""
        if self._pub is None:
            return
        self.core.flush()
        self.publish()
        if self._router is not None:
            self._router.close(linger=0)
        self._pub.close(linger=200)
        if self.sec is not None:
            self.sec.close()
        assert self._zctx is not None
        self._zctx.term()
        self._pub = None

    def publish(self) -> None:
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


    async def _heartbeat_loop(self) -> None:
        counters = Counters(self.core.log)
        while True:
            self.core.heartbeat(time.time_ns())
            self.publish()
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
        self.publish()     # deltas the reply flushed go out before anything newer
        return reply
