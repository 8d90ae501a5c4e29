"""The publisher: merged snapshots from the aggregator, fanned out to any number of subscribers.

The aggregator's payload bytes are forwarded unchanged (``seq`` and ``epoch`` pass through) unless
``--levels`` asks for fewer levels than the aggregator publishes, in which case each snapshot is
cut to N levels per side and re-encoded. The subscriber socket is a PUB with a per-subscriber send
high-water mark: a slow or stalled subscriber loses snapshots (each one is a full state, so it only
misses intermediate states), it never slows the pipeline or the other subscribers.

Cost per snapshot: its header is read in place and its shape checked by msgpack's C unpacker
without building a level (:class:`common.schema.MergedPeek`); its two frames are sent as received;
the latest store keeps the same bytes (O(1)); ``published`` is counted once per batch read. What
is left is ZeroMQ's own cost per message and per wake-up (bench/pubforward.py compares the
publisher with a bare forward of the same messages).

Late joiners: the subscriber socket is an XPUB that reports each subscription; the publisher then
asks the aggregator (``aggregator.ctl``) to publish those symbols again with the next ``seq``, so a
new subscriber has a full book at once, even in a quiet market, and the others see one more
contiguous snapshot. A restarted publisher asks for every symbol the same way.

Latest-only subscribers (``publisher.latest_port``): a ROUTER beside the PUB serves the newest
book of each symbol on request (:mod:`services.publisher.latest`, protocol in
:mod:`common.schema`), so a subscriber that stalled reads the book of now instead of a queue of
old ones. It never touches the PUB path: SUB subscribers get exactly what they got before.
Books from the aggregator are always handled before requests (at most ``LATEST_BATCH`` requests
per turn of the loop), so latest-only clients, however many, only take time the pipeline leaves.
"""

from __future__ import annotations

import errno
import logging
import signal
import time

import zmq

from common import bus, schema
from common.config import Config
from common.metrics import LatencyHistogram
from common.schema import BusError
from common.security import Security
from services.publisher.latest import LatestBooks, Out

log = logging.getLogger("publisher")

# Limits
#: Requests read from the latest endpoint per turn of the loop (books from the aggregator first).
LATEST_BATCH = 200
#: Answers queued per latest-only client before ZeroMQ refuses more (a client that asks but does
#: not read: its answers are dropped, counted in ``latest_unread``).
LATEST_SNDHWM = 16
#: Held latest requests at once (all clients).
LATEST_MAX_WAITING = 10_000
#: Messages read from the aggregator per turn of the loop.
SUB_BATCH = 10_000

_SNDMORE = zmq.SNDMORE


class Publisher:
    def __init__(self, cfg: Config, *, levels: int, ctx: zmq.Context | None = None) -> None:
        self.cfg = cfg
        self.levels = levels
        self.ctx = ctx or bus.context()
        self.sec = Security.from_config(cfg)
        # Scale-out ([[aggregator.shards]]): one SUB connected to every aggregator process, a DEALER
        # to each one's ctl; a republish request goes to the process that owns the symbol.
        self.upstreams = cfg.aggregator.processes
        self.upstream_of = {sym: u.index for u in self.upstreams for sym in u.symbols}
        self.upstream_by_pub = {u.pub: u.index for u in self.upstreams}
        self.sub = bus.sub([u.pub for u in self.upstreams], [b"book."], max_msg_size=cfg.max_msg_size,
                           ctx=self.ctx, sec=self.sec)
        self.out = bus.xpub(cfg.publisher.endpoint, hwm=cfg.publisher.sndhwm, ctx=self.ctx, sec=self.sec)
        # Every unsubscription too (also those of a subscriber that disconnects), so the count of
        # open subscriptions per topic is exact (metrics); subscriptions were reported already.
        self.out.setsockopt(zmq.XPUB_VERBOSER, 1)
        self.ctls = [bus.dealer(u.ctl, max_msg_size=1 << 16, ctx=self.ctx, sec=self.sec) for u in self.upstreams]
        self.ctl = self.ctls[0]
        self.sub_watch = bus.Reconnector(self.sub)
        for c in self.ctls:
            c.setsockopt(zmq.SNDHWM, 100)
        self.counters: dict[str, int] = {}
        self.latest = LatestBooks(max_waiting=LATEST_MAX_WAITING)
        self.latest.extra = self.counters
        self.latest_sock: zmq.Socket | None = None
        if cfg.publisher.latest_endpoint is not None:
            self.latest_sock = self.ctx.socket(zmq.ROUTER)
            self.latest_sock.setsockopt(zmq.LINGER, 0)
            self.latest_sock.setsockopt(zmq.ROUTER_MANDATORY, 1)   # a gone client is an error, not silence
            self.latest_sock.setsockopt(zmq.SNDHWM, LATEST_SNDHWM)
            self.latest_sock.setsockopt(zmq.MAXMSGSIZE, 1 << 16)
            try:
                if self.sec is not None:
                    self.sec.server(self.latest_sock)
                self.latest_sock.bind(cfg.publisher.latest_endpoint)
            except BaseException:
                self.latest_sock.close(0)
                self.sub.close(0)
                self.out.close(0)
                for c in self.ctls:
                    c.close(0)
                raise
        # Per aggregator process: heard from yet, and the republish wishes until then (None = all).
        self.connected_shards: set[int] = set()
        self.deferred: dict[int, set[str] | None] = {u.index: set() for u in self.upstreams}
        self._fresh: set[int] = set()      # processes heard from since their last connection loss
        self.last: dict[str, tuple[int, int]] = {}
        self._peek = schema.MergedPeek().peek
        self.running = True
        # Health and metrics (services/publisher/metrics.py reads these).
        self.ticked = time.monotonic()                  # the loop's last round
        self.subscriptions: dict[bytes, int] = {}       # open subscriptions per topic
        self.latency: dict[str, LatencyHistogram] = {}  # rts of a snapshot's newest input -> sent
        self._ts_seen: dict[str, int] = {}
        self._last_log = time.monotonic()
        log.info("forwarding %s -> subscribers on %s (levels %d, per-subscriber HWM %d, CURVE %s); "
                 "latest-only subscribers on %s", ", ".join(u.pub for u in self.upstreams), cfg.publisher.endpoint,
                 levels,
                 cfg.publisher.sndhwm, "on: only allowed client keys" if self.sec else "off",
                 cfg.publisher.latest_endpoint or "(off: publisher.latest_port not set)")

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def _ask_republish(self, symbols: list[str]) -> None:
        """Ask the aggregator process owning each symbol to publish it again (every process for
        ``[]``, every symbol); symbols no process carries are not asked for."""
        for index, syms in self.cfg.aggregator.route(symbols).items():
            self._ask_shard(index, syms)

    def _ask_shard(self, index: int, symbols: list[str]) -> None:
        if index not in self.connected_shards:
            # Until the aggregator's first message our own subscription may not have reached it:
            # a republished book could be lost. The aggregator republishes everything when our
            # subscription arrives; remember the wish meanwhile.
            wish = self.deferred.get(index, set())
            if wish is not None:
                self.deferred[index] = None if not symbols else wish | set(symbols)
            return
        try:
            self.ctls[index].send(schema.encode_snapshot_request(symbols), zmq.NOBLOCK)
        except zmq.Again:
            self._count("republish_blocked")

    def _upstream_heard(self, index: int) -> None:
        """The first book from aggregator process ``index`` (since the last connection loss): its
        reconnect backoff starts afresh; the first ever: send the wishes held for it."""
        self._fresh.add(index)
        self.sub_watch.healthy(self.upstreams[index].pub)
        if index in self.connected_shards:
            return
        self.connected_shards.add(index)
        wished, self.deferred[index] = self.deferred.get(index, set()), set()
        if wished is None or wished:
            self._ask_shard(index, sorted(wished or ()))

    def on_subscription(self, frame: bytes) -> None:
        """XPUB reports ``\x01<topic>`` on subscribe, ``\x00<topic>`` on unsubscribe."""
        if not frame or frame[0] > 1:
            return
        topic = bytes(frame[1:])
        n = self.subscriptions.get(topic, 0) + (1 if frame[0] == 1 else -1)
        if n > 0:
            self.subscriptions[topic] = n
        else:
            self.subscriptions.pop(topic, None)
        if frame[0] != 1:
            return
        self._count("subscriptions")
        if topic.startswith(b"book.") and len(topic) > 5:
            try:
                self._ask_republish([topic[5:].decode("ascii")])
            except UnicodeDecodeError:
                return
        elif b"book.".startswith(topic):   # "", "b", ... "book.": everything
            self._ask_republish([])

    def on_snapshot(self, frames: list[bytes]) -> None:
        """One message from the aggregator, as a list of frames: forwarded (counted) or dropped."""
        if len(frames) != 2:
            self._count("malformed")
            return
        if self.forward(frames[0], frames[1]):
            self._count("published")

    def forward(self, topic: bytes, payload: bytes) -> bool:
        """One snapshot from the aggregator: check its header and shape without decoding the levels
        (:class:`common.schema.MergedPeek`), follow its ``seq``, send its bytes unchanged
        (cut and re-encoded only when it has more than ``levels`` per side), observe its latency,
        keep it as the symbol's newest for the latest endpoint. Returns True when sent; a malformed
        one is counted and logged. The caller counts ``published`` (one addition per batch)."""
        if not topic.startswith(b"book."):
            self._count("malformed")
            return False
        try:
            symbol, epoch, seq, ts, bids, asks = self._peek(topic, payload)
        except BusError as e:
            self._count("malformed")
            log.warning("dropped a malformed snapshot from the aggregator: %s", e)
            return False
        shard = self.upstream_of.get(symbol, 0)
        if shard not in self._fresh:
            self._upstream_heard(shard)
        prev = self.last.get(symbol)
        if prev is not None and (prev[0] != epoch or seq != prev[1] + 1):
            self._on_jump(symbol, prev, epoch, seq)
        self.last[symbol] = (epoch, seq)
        if bids > self.levels or asks > self.levels:
            payload = self._cut(payload)
        send = self.out.send
        send(topic, _SNDMORE)
        send(payload)
        if ts is not None and ts > self._ts_seen.get(symbol, 0):   # new input: its age once sent
            self._ts_seen[symbol] = ts
            h = self.latency.get(symbol)
            if h is None:
                h = self.latency[symbol] = LatencyHistogram()
            h.observe((time.time_ns() - ts) / 1e9)
        if self.latest_sock is not None:
            for msg in self.latest.on_book(symbol, epoch, seq, topic, payload):
                self._send_latest(msg)
        return True

    def _on_jump(self, symbol: str, prev: tuple[int, int], epoch: int, seq: int) -> None:
        if prev[0] != epoch:
            log.info("%s: aggregator epoch changed %d -> %d (aggregator restarted)", symbol, prev[0], epoch)
        else:
            self._count("upstream_gaps")
            log.warning("%s: missed snapshots %d..%d from the aggregator", symbol, prev[1] + 1, seq - 1)

    def _cut(self, payload: bytes) -> bytes:
        """The payload cut to ``levels`` per side (the aggregator publishes more than asked)."""
        cut = schema.cut_merged(schema.unpack(payload), self.levels)
        return payload if cut is None else cut

    def _send_latest(self, msg: Out) -> None:
        """Send one answer of the latest endpoint; a client that left (ZeroMQ cannot route to it)
        is forgotten, one that does not read its answers loses this one (counted)."""
        assert self.latest_sock is not None
        try:
            self.latest_sock.send_multipart(msg, zmq.NOBLOCK)
        except zmq.Again:
            self._count("latest_unread")
        except zmq.ZMQError as e:
            if e.errno != errno.EHOSTUNREACH:
                raise
            self.latest.gone(msg[0])

    def on_latest(self, now: float) -> None:
        """Serve up to ``LATEST_BATCH`` pending requests of the latest endpoint."""
        assert self.latest_sock is not None
        for _ in range(LATEST_BATCH):
            try:
                frames = self.latest_sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            answer = self.latest.on_message(frames, now)
            if answer is not None:
                self._send_latest(answer)

    def drain(self) -> int:
        """Forward every message waiting on the SUB socket (at most ``SUB_BATCH``): returns how many
        were read. Frames are read one by one (a message from the aggregator is exactly
        ``[topic, payload]``; any other shape is dropped, counted ``malformed``) and copied: at a
        few hundred bytes a copy is cheaper than a zero-copy frame object; ``published`` is
        counted once per batch."""
        recv, more = self.sub.recv, self.sub.getsockopt
        n = sent = 0
        try:
            while n < SUB_BATCH:
                topic = recv(zmq.NOBLOCK)
                n += 1
                if not more(zmq.RCVMORE):
                    self._count("malformed")
                    continue
                payload = recv(zmq.NOBLOCK)
                if more(zmq.RCVMORE):
                    while more(zmq.RCVMORE):    # the rest of this message (delivered whole)
                        recv(zmq.NOBLOCK)
                    self._count("malformed")
                    continue
                if self.forward(topic, payload):
                    sent += 1
        except zmq.Again:
            pass
        finally:
            if sent:
                self.counters["published"] = self.counters.get("published", 0) + sent
        return n

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.out, zmq.POLLIN)
        poller.register(self.sub_watch.monitor, zmq.POLLIN)
        if self.latest_sock is not None:
            poller.register(self.latest_sock, zmq.POLLIN)
        next_expiry = time.monotonic()
        while self.running:
            events = dict(poller.poll(250 if self.latest.held else 500))
            self.ticked = now = time.monotonic()
            if self.sub_watch.monitor in events:
                for endpoint in self.sub_watch.on_events(now):
                    self._count("upstream_disconnects")
                    lost = self.upstream_by_pub.get(endpoint)
                    if lost is None:
                        self._fresh.clear()
                    else:
                        self._fresh.discard(lost)
                    log.warning("connection to the aggregator (%s) lost; reconnecting", endpoint)
            self.sub_watch.tick(now)
            if self.out in events:
                for _ in range(10_000):
                    try:
                        self.on_subscription(self.out.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if self.sub in events:
                self.drain()
            if self.latest_sock is not None:
                if self.latest_sock in events:
                    self.on_latest(now)
                if now >= next_expiry:
                    next_expiry = now + 0.25
                    for msg in self.latest.expire(now):
                        self._send_latest(msg)
            if now - self._last_log > 30 and self.counters:
                self._last_log = now
                log.info("counters %s", " ".join(f"{k}={v}" for k, v in sorted(
                    {**self.counters, **{f"latest_{k}": v for k, v in self.latest.counters.items()}}.items())))
        self.close()
        log.info("stopped; counters %s; latest endpoint %s", self.counters, self.latest.counters)

    def close(self) -> None:
        """Close every socket (after :meth:`run`, or when driven step by step)."""
        self.sub_watch.close()
        self.sub.close()
        self.out.close()
        for c in self.ctls:
            c.close()
        if self.latest_sock is not None:
            self.latest_sock.close()
        if self.sec is not None:
            self.sec.close()

    def stop(self) -> None:
        self.running = False
