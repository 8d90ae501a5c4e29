"""The sequencer: feed bus in, merged snapshots out.

One thread, one ZeroMQ poll loop (blocking, with a timeout for its timers):

1. drain the feed SUB socket (all pending messages, bounded per round), checking every
   (venue, symbol) stream's ``seq``; a jump, a lost tail (seen in a heartbeat) or an unknown feed
   session puts the stream in ``syncing`` (its levels leave the merged view) and sends a snapshot
   request to that feed's ROUTER; stream messages arriving meanwhile are buffered and those at or
   below the reply's ``seq`` dropped (the ZeroMQ Guide's clone pattern);
2. read snapshot replies; answer merged-book requests from the publisher (late joiners);
3. mark a venue ``down`` when its feed has been silent for ``down_after`` seconds;
4. for every symbol whose inputs changed, build the merged top-N (live venues only, dust out) and
   publish it with the next per-symbol ``seq`` of this ``epoch`` -- only when what a subscriber
   would see changed;
5. answer depletion queries against exactly the books of the last published ``seq``.

The pure parts live beside it: :mod:`services.aggregator.sequencer` (the sequence rule of each
stream, step 1) and :mod:`services.aggregator.view` (each symbol's merged top-N and streamed
depletion, rebuilt only where a delta reaches them, step 4). This module keeps the sockets, the
clock and the loop.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import zmq

from common import bus, schema
from common.book import ASK, BID, Book
from common.config import Config, DustRule
from common.metrics import LatencyHistogram
from common.schema import (
    DOWN,
    LIVE,
    SNAP,
    SYNCING,
    BookMsg,
    BusError,
    HeartbeatMsg,
    Level,
    MergedBook,
    StatusMsg,
    VenueTimes,
)
from common.security import Security
from services.aggregator import merge
from services.aggregator.sequencer import APPLY, DUPLICATE, MAX_BUFFERED, OVERFLOW, Stream
from services.aggregator.view import MergedView

log = logging.getLogger("aggregator")

SNAPSHOT_RETRY_S = 2.0
DRAIN_MAX = 5_000

__all__ = ["DRAIN_MAX", "MAX_BUFFERED", "SNAPSHOT_RETRY_S", "Aggregator", "Link", "Stream", "SymbolState"]


@dataclass(slots=True)
class Link:
    """One feed process (a venue, or one shard of it): its control socket and when it was last
    heard."""

    venue: str
    shard: int
    ctl: zmq.Socket
    pub: str                       # the feed's bus endpoint
    sess: int | None = None
    last_heard: float = 0.0        # monotonic, for down_after
    heard_ns: int = 0              # wall clock, for subscribers (venue_ts.heard); 0: never
    down: bool = False
    symbols: list[str] = field(default_factory=list)
    mode: str = ""                 # the venue's trading mode, when its feed reports one

    @property
    def name(self) -> str:
        return self.venue if self.shard == 0 else f"{self.venue}[{self.shard}]"


@dataclass(slots=True)
class SymbolState:
    symbol: str
    streams: dict[str, Stream]
    dust: dict[str, DustRule]
    seq: int = 0
    ts: int = 0
    dirty: bool = True
    last_payload: bytes | None = None
    force: bool = False            # publish even if unchanged (a subscriber just joined)
    #: The published top-N and streamed depletion, rebuilt only where a delta reaches them.
    view: MergedView = field(default_factory=lambda: MergedView(0, {}))
    #: What else a snapshot shows besides the view (venue statuses and modes), last published.
    last_venues: dict[str, str] | None = None
    last_modes: dict[str, str] | None = None
    #: Feed receive time to publication of the newest input of each snapshot (metrics), and the
    #: input time last observed (a snapshot republished without new input is not observed).
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    observed_ts: int = 0

    @property
    def floor(self) -> list[Decimal | None]:
        """What a delta must reach to change what subscribers see (the published top-N and the
        streamed depletion walks): bids below floor[BID] and asks above floor[ASK] cannot. None:
        every level can (fewer than N levels, or a walk ran out)."""
        return self.view.floor


class Aggregator:
    """Owns the sockets and the state; :meth:`run` is the loop."""

    def __init__(self, cfg: Config, *, ctx: zmq.Context | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or bus.context()
        self.epoch = time.time_ns()
        self.levels = cfg.levels
        self.counters: dict[str, int] = {}
        self.running = True
        self.ticked = time.monotonic()     # the loop's last round (health)
        self.query_latency = LatencyHistogram()
        venues = cfg.enabled_venues
        self._fees = {v.id: v.taker_fee for v in venues}
        mms = cfg.max_msg_size
        self.sec = Security.from_config(cfg)
        sec = self.sec
        now = time.monotonic()
        # One link per feed process: a venue split over shards is still one venue to subscribers.
        self.links = [Link(v.id, sh.index, bus.dealer(sh.ctl, max_msg_size=mms, ctx=self.ctx, sec=sec), sh.pub,
                           last_heard=now, symbols=list(sh.symbols)) for v in venues for sh in v.processes]
        self.link_of = {(lk.venue, sym): lk for lk in self.links for sym in lk.symbols}
        self.states: dict[str, SymbolState] = {}
        for sym in cfg.all_symbols:
            carriers = [v for v in venues if sym in v.symbols]
            dust = {v.id: v.dust_rule(sym) for v in carriers}
            self.states[sym] = SymbolState(
                sym, {v.id: Stream(v.id, sym, self.link_of[(v.id, sym)]) for v in carriers}, dust,
                view=MergedView(self.levels, dust, cfg.aggregator.depletion.get(sym)))
        self.sub = bus.sub([lk.pub for lk in self.links], [b"md.", b"hb."], max_msg_size=mms, ctx=self.ctx,
                           sec=sec)
        if cfg.aggregator.index is not None:
            # One shard of several (cfg.for_aggregator(i)): its symbols' streams only. ZeroMQ matches
            # prefixes (md.x.BTC/USD also brings BTC/USDT's), so a foreign stream may still come, as
            # may one sent before this narrowing reached the feed: dropped as bus_unknown_stream.
            for topic in sorted({schema.feed_topic(lk.venue, sym) for lk in self.links for sym in lk.symbols}):
                self.sub.setsockopt(zmq.SUBSCRIBE, topic)
            self.sub.setsockopt(zmq.UNSUBSCRIBE, b"md.")
        # XPUB: a (re)connecting publisher's subscription makes every book be published again.
        self.pub = bus.xpub(cfg.aggregator.pub, hwm=10_000, ctx=self.ctx, sec=sec)
        self.ctl = bus.router(cfg.aggregator.ctl, max_msg_size=1 << 16, ctx=self.ctx, sec=sec)
        self.query: Any = None
        self.query_sock: zmq.Socket | None = None
        self._depletion_fn: Any = None
        self._setup_depletion()
        # A feed process that dies closes its TCP connection at once: the SUB socket's monitor
        # reports it, so its venue is down now rather than after down_after of silence.
        # Every connecting socket is re-dialled after a broken connection, also one ZeroMQ cut off
        # itself (a message above MAXMSGSIZE), with a capped backoff per endpoint.
        self.link_by_endpoint = {lk.pub: lk for lk in self.links}
        self.sub_watch = bus.Reconnector(self.sub)
        self.ctl_watch = [(lk, bus.Reconnector(lk.ctl)) for lk in self.links]
        self.poller = zmq.Poller()
        for s in [self.sub, self.sub_watch.monitor, *(w.monitor for _, w in self.ctl_watch), self.pub,
                  self.ctl, *(lk.ctl for lk in self.links)]:
            self.poller.register(s, zmq.POLLIN)
        if self.query_sock is not None:
            self.poller.register(self.query_sock, zmq.POLLIN)
        self._last_counter_log = now
        log.info("epoch %d: %d symbols %s from feeds %s; publishing on %s, control %s; CURVE %s",
                 self.epoch, len(self.states), list(self.states), [lk.name for lk in self.links],
                 cfg.aggregator.pub, cfg.aggregator.ctl, "on" if sec else "off")
        for lk in self.links:
            self._request_snapshot(lk, lk.symbols, now)

    # --- optional parts (depletion engine and query endpoint) ----------------------------------

    def _setup_depletion(self) -> None:
        try:
            from services.aggregator import depletion, query
        except ImportError:  # pragma: no cover - the engine ships with the aggregator
            log.warning("depletion engine not available: no query endpoint, no streamed depletion")
            return
        self.query = query.QueryService(self)
        self.query_sock = bus.router(self.cfg.aggregator.query, max_msg_size=1 << 16, ctx=self.ctx, sec=self.sec)
        self._depletion_fn = depletion.summaries
        log.info("depletion queries on %s", self.cfg.aggregator.query)

    # --- BookSource protocol (used by the query service and the streamed depletion) -------------

    def position(self, symbol: str) -> tuple[int, int] | None:
        st = self.states.get(symbol)
        return None if st is None or st.seq == 0 else (self.epoch, st.seq)

    def symbols(self) -> list[str]:
        return list(self.states)

    def statuses(self, symbol: str) -> dict[str, str]:
        st = self.states[symbol]
        return {v: self._status(s) for v, s in sorted(st.streams.items())}

    def merged_side(self, symbol: str, side: int) -> Iterator[tuple[Decimal, Decimal, str]]:
        st = self.states[symbol]
        return merge.merged_iter(self._live_books(st), side, st.dust)

    def venue_side(self, symbol: str, venue: str, side: int) -> Iterator[tuple[Decimal, Decimal]] | None:
        st = self.states.get(symbol)
        if st is None or venue not in st.streams:
            return None
        return st.streams[venue].book.iter_side(side)

    def fees(self) -> dict[str, Decimal]:
        return dict(self._fees)

    def exact_to(self, symbol: str, side: int, venue: str | None = None) -> Decimal | None:
        """How deep ``side`` is known exactly: one venue's (``venue``), or the merged book's (the
        shallowest of the live venues that cap their depth). None: the whole side is known."""
        st = self.states[symbol]
        if venue is not None:
            s = st.streams.get(venue)
            return None if s is None else s.exact[side]
        return merge.shallowest([s.exact[side] for v, s in st.streams.items() if self._status(s) == LIVE], side)

    def modes(self, symbol: str) -> dict[str, str]:
        """The trading mode of each venue of ``symbol`` that reports one (Kraken's system status)."""
        return {v: s.link.mode for v, s in sorted(self.states[symbol].streams.items()) if s.link.mode}

    # --- status -------------------------------------------------------------------------------

    def _status(self, s: Stream) -> str:
        if s.link.down:
            return DOWN
        if s.awaiting:
            return SYNCING if s.status == LIVE else s.status
        return s.status

    def _live_books(self, st: SymbolState) -> dict[str, Book]:
        return {v: s.book for v, s in st.streams.items() if self._status(s) == LIVE}

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # --- feed bus -----------------------------------------------------------------------------

    def _request_snapshot(self, link: Link, symbols: list[str], now: float) -> None:
        if not symbols:
            return
        for sym in symbols:
            self.states[sym].streams[link.venue].request(now)
            self.states[sym].dirty = True
        try:
            link.ctl.send(schema.encode_snapshot_request(symbols), zmq.NOBLOCK)
            self._count("snapshot_requests")
        except zmq.Again:
            self._count("snapshot_requests_blocked")

    def _gap(self, s: Stream, why: str, now: float) -> None:
        self._count("gaps")
        log.warning("%s %s: %s; requesting a snapshot (levels out until healed)", s.venue, s.symbol, why)
        s.gap()
        self._request_snapshot(s.link, [s.symbol], now)

    def on_feed(self, frames: list[bytes], now: float) -> None:
        try:
            msg = schema.decode_feed(frames)
        except BusError as e:
            self._count("bus_malformed")
            if self.counters["bus_malformed"] <= 10 or self.counters["bus_malformed"] % 1000 == 0:
                log.warning("dropped a malformed bus message (%d so far): %s", self.counters["bus_malformed"], e)
            return
        if isinstance(msg, HeartbeatMsg):
            # A heartbeat names its feed process by the symbols it carries.
            link = next((lk for sym in msg.seqs if (lk := self.link_of.get((msg.venue, sym)))), None)
            if link is None:
                self._count("bus_unknown_feed")
                return
            self._heard(link, msg.sess, now)
            if msg.mode != link.mode:
                log.warning("%s: venue mode %s -> %s", link.name, link.mode or "(none)", msg.mode or "(none)")
                link.mode = msg.mode
                self._link_dirty(link)
            self._on_heartbeat(msg, now)
            return
        st = self.states.get(msg.symbol)
        s = st.streams.get(msg.venue) if st is not None else None
        if s is None:
            self._count("bus_unknown_stream")
            return
        self._heard(s.link, msg.sess, now)
        verdict, why = s.offer(msg) if s.awaiting else s.check(msg)
        if verdict == APPLY:
            self._apply(s, msg)
        elif verdict == OVERFLOW:
            self._gap(s, why, now)
            s.buffer.append(msg)
        elif verdict == DUPLICATE:
            self._count("bus_duplicates")
        elif why:
            self._gap(s, why, now)

    def _heard(self, link: Link, sess: int, now: float) -> None:
        link.last_heard = now
        link.heard_ns = time.time_ns()
        self.sub_watch.healthy(link.pub)
        if link.sess != sess:
            if link.sess is not None:
                log.info("%s: feed session changed (%s -> %s): feed restarted", link.name, link.sess, sess)
            link.sess = sess
        if link.down:
            link.down = False
            log.info("%s: feed heard again", link.name)
            self._link_dirty(link)

    def _link_dirty(self, link: Link) -> None:
        for sym in link.symbols:
            self.states[sym].dirty = True

    def _on_heartbeat(self, hb: HeartbeatMsg, now: float) -> None:
        for sym, last in hb.seqs.items():
            st = self.states.get(sym)
            s = st.streams.get(hb.venue) if st is not None else None
            if s is None:
                continue
            why = s.heartbeat(hb.sess, last)
            if why is not None:
                self._gap(s, why, now)

    def _on_stream(self, s: Stream, msg: BookMsg | StatusMsg, now: float) -> None:
        verdict, why = s.check(msg)
        if verdict == APPLY:
            self._apply(s, msg)
        elif verdict == DUPLICATE:
            self._count("bus_duplicates")
        else:
            # Not re-buffered: the snapshot that answers covers it (it is cut after).
            self._gap(s, why, now)

    def _apply(self, s: Stream, msg: BookMsg | StatusMsg) -> None:
        s.advance(msg)
        st = self.states[s.symbol]
        if isinstance(msg, StatusMsg):
            if msg.status != s.status:
                log.info("%s %s: %s (%s)", s.venue, s.symbol, msg.status, msg.reason)
            s.status = msg.status
            s.reason = msg.reason
            if msg.status != LIVE:
                s.book.clear()
                s.exact = (None, None)
            st.view.invalidate()
        elif msg.kind == SNAP:
            s.ets, s.rts = msg.ets, msg.rts
            s.levels += len(msg.bids) + len(msg.asks)
            s.book.load(msg.bids, msg.asks)
            s.exact = msg.exact or (None, None)
            st.view.invalidate()
            if s.status != LIVE:
                log.info("%s %s: live (%d bids, %d asks)", s.venue, s.symbol, len(s.book.bids), len(s.book.asks))
            s.status = LIVE
            s.reason = ""
        else:
            s.ets, s.rts = msg.ets, msg.rts
            s.levels += len(msg.bids) + len(msg.asks)
            s.book.apply_levels(msg.bids, msg.asks)
            if msg.exact is not None and msg.exact != s.exact:
                s.exact = msg.exact
                st.dirty = True
            if not st.view.note(s.venue, msg.bids, msg.asks) and not st.dirty:
                self._count("deltas_below_view")
                return
        if msg.rts > st.ts:
            st.ts = msg.rts
        st.dirty = True

    def on_snapshot_reply(self, venue: str, frames: list[bytes], now: float) -> None:
        for raw in frames:
            try:
                msg = schema.decode_feed_payload(schema.unpack(raw))
            except BusError as e:
                self._count("snapshot_reply_malformed")
                log.warning("%s: malformed snapshot reply: %s", venue, e)
                continue
            if isinstance(msg, HeartbeatMsg) or msg.venue != venue:
                self._count("snapshot_reply_malformed")
                continue
            st = self.states.get(msg.symbol)
            s = st.streams.get(venue) if st is not None else None
            if s is None:
                self._count("snapshot_reply_unwanted")
                continue
            if not s.accept_reply():
                self._count("snapshot_reply_unwanted")
                continue
            self._apply(s, msg)
            for m in s.replay():
                if s.awaiting:
                    s.buffer.append(m)
                else:
                    self._on_stream(s, m, now)
            self._count("snapshots_applied")

    def on_feed_disconnect(self, now: float) -> None:
        for endpoint in self.sub_watch.on_events(now):
            link = self.link_by_endpoint.get(endpoint)
            self._count("feed_disconnects")
            if link is None:
                continue
            log.warning("%s: connection to the feed (%s) lost: feed down, its levels leave the merged book",
                        link.name, endpoint)
            if not link.down:
                link.down = True
                self._link_dirty(link)

    # --- timers -------------------------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        for link in self.links:
            if not link.down and now - link.last_heard > self.cfg.aggregator.down_after:
                link.down = True
                log.warning("%s: no message for %.1f s: feed down, its levels leave the merged book",
                            link.name, now - link.last_heard)
                self._link_dirty(link)
        for st in self.states.values():
            for s in st.streams.values():
                if s.awaiting and now - s.requested_at > SNAPSHOT_RETRY_S and not s.link.down:
                    self._request_snapshot(s.link, [s.symbol], now)

    # --- output -------------------------------------------------------------------------------

    def _content(self, st: SymbolState) -> bool:
        """Bring the symbol's merged view up to date; True when what a subscriber would see
        (levels, spread, depletion summaries, venue statuses and modes) changed since the last
        snapshot published."""
        # One pass over the venues for what _live_books, exact_to, statuses and modes would say.
        books: dict[str, Book] = {}
        venues: dict[str, str] = {}
        modes: dict[str, str] = {}
        exact_bids: list[Decimal | None] = []
        exact_asks: list[Decimal | None] = []
        for v, s in sorted(st.streams.items()):
            venues[v] = status = self._status(s)
            if status == LIVE:
                books[v] = s.book
                exact_bids.append(s.exact[BID])
                exact_asks.append(s.exact[ASK])
            if s.link.mode:
                modes[v] = s.link.mode
        changed = st.view.refresh(books, (merge.shallowest(exact_bids, BID), merge.shallowest(exact_asks, ASK)))
        if venues != st.last_venues or modes != st.last_modes:
            st.last_venues, st.last_modes = venues, modes
            changed = True
        return changed

    @staticmethod
    def _venue_ts(st: SymbolState) -> dict[str, VenueTimes]:
        """Freshness per venue of the symbol, as of now (refreshed with every published snapshot,
        never a reason to publish)."""
        return {v: VenueTimes(s.ets, s.rts, s.link.heard_ns) for v, s in sorted(st.streams.items())}

    def publish_dirty(self) -> int:
        n = 0
        for st in self.states.values():
            if not st.dirty and not st.force:
                continue
            st.dirty = False
            if not self._content(st) and not st.force:
                continue
            st.force = False
            st.seq += 1
            view = st.view
            # The merged levels are (price, amount, venue) tuples (cast: no runtime cost) and the
            # view keeps their wire text: the encoder reads only that.
            frames = schema.encode_merged(MergedBook(
                st.symbol, self.epoch, st.seq, st.ts, view.spread(), cast(list[Level], view.top[BID]),
                cast(list[Level], view.top[ASK]), dict(cast(dict[str, str], st.last_venues)), None,
                self._venue_ts(st), venue_modes=st.last_modes or None),
                depletion=view.depletion(), wire=(view.wire[BID], view.wire[ASK]))
            st.last_payload = frames[1]
            self.pub.send_multipart(frames)
            if st.ts != st.observed_ts:      # new input reached the snapshot: its age at publication
                st.observed_ts = st.ts
                st.latency.observe((time.time_ns() - st.ts) / 1e9)
            n += 1
        return n

    def on_ctl(self, frames: list[bytes]) -> None:
        """The publisher saw a subscriber join (or restarted): publish the current merged book of
        those symbols again, with the next seq, so a late joiner has it at once even in a quiet
        market and everybody else sees a contiguous seq. No reply."""
        try:
            syms = schema.decode_snapshot_request(frames[-1]) or list(self.states)
        except BusError:
            self._count("ctl_malformed")
            return
        for sym in syms:
            st = self.states.get(sym)
            if st is not None:
                st.force = True
        self._count("republish_requests")

    # --- loop ---------------------------------------------------------------------------------

    def step(self, timeout_ms: int = 100) -> None:
        events = dict(self.poller.poll(timeout_ms))
        self.ticked = now = time.monotonic()
        if self.sub in events:
            got = DRAIN_MAX
            for i in range(DRAIN_MAX):
                try:
                    frames = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    got = i
                    break
                self.on_feed(frames, now)
            self._count("bus_messages", got)       # per batch (metrics)
        for link in self.links:
            if link.ctl in events:
                link.heard_ns = time.time_ns()
                while True:
                    try:
                        frames = link.ctl.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.on_snapshot_reply(link.venue, frames, now)
        if self.sub_watch.monitor in events:
            self.on_feed_disconnect(now)
        for link, w in self.ctl_watch:
            if w.monitor in events:
                for endpoint in w.on_events(now):
                    self._count("ctl_disconnects")
                    log.warning("%s: snapshot connection to the feed (%s) lost; reconnecting", link.name, endpoint)
        if self.pub in events:
            while True:
                try:
                    frame = self.pub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frame[:1] == b"\x01":
                    log.info("a downstream subscriber joined (%r): publishing every book again", frame[1:40])
                    for st in self.states.values():
                        st.force = True
        if self.ctl in events:
            while True:
                try:
                    self.on_ctl(self.ctl.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        self.on_timer(now)
        self.sub_watch.tick(now)
        for _, w in self.ctl_watch:
            w.tick(now)
        self.publish_dirty()
        if self.query_sock is not None and self.query_sock in events:
            for _ in range(1000):
                try:
                    frames = self.query_sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                t0 = time.perf_counter()
                reply = self.query.handle(frames)
                self.query_latency.observe(time.perf_counter() - t0)
                self.query_sock.send_multipart(reply)
        if now - self._last_counter_log > 30:
            self._last_counter_log = now
            if self.counters:
                log.info("counters %s", " ".join(f"{k}={v}" for k, v in sorted(self.counters.items())))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        while self.running:
            self.step()
        self.close()

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        self.sub_watch.close()
        for _, w in self.ctl_watch:
            w.close()
        for s in [self.sub, self.pub, self.ctl, *(lk.ctl for lk in self.links)]:
            s.close()
        if self.query_sock is not None:
            self.query_sock.close()
        if self.sec is not None:
            self.sec.close()
        log.info("stopped; counters %s", self.counters)
