"""The feed core: every venue's sync rule run without any I/O (in the spirit of python-websockets'
sans-I/O protocol). Frames, REST bodies and clock ticks go in; bus messages and actions come out.
It imports no asyncio, WebSocket client, zmq or requests; :mod:`common.feed.runner` is the transport.

Inputs (``now`` is a monotonic time in s, ``rts`` a wall-clock receive time in ns)::

    connected(now)                  a new WebSocket connection is open
    frame(text, rts, now)           one received text frame
    snapshot_body(symbol, body, rts) / snapshot_failed(symbol, why, delay)   a REST snapshot answer
    tick(now, rts)                  about four times a second: timeouts, quiet symbols
    disconnected(status, reason)    the connection ended
    heartbeat(rts)                  once a second: the bus heartbeat

Outputs: :meth:`take_bus` (bus messages, in order; :meth:`flush` first turns coalesced updates
into deltas) and :meth:`take_actions` (:class:`Send`, :class:`Fetch`, :class:`Reconnect`).

Per symbol, a book is built from a REST snapshot (``spec.snapshot == REST``: fetch, the sequencer
checks it against the buffered stream) or from the venue's in-band snapshot (STREAM). Anything
that voids one symbol's book — a gap, a checksum mismatch, a crossed book, a malformed update,
a snapshot that never came — resyncs that symbol only (``spec.resync``: refetch, resubscribe, or
reconnect when the venue's book only comes with a new connection); a jump of the connection's
sequence number (Coinbase) or the venue's maintenance affect the whole connection.

Quiet symbols (``quiet_after``, per venue or per symbol): a ``live`` book that has not changed
for that long while its connection stays up may belong to a stream the venue stopped feeding.
:meth:`FeedCore.tick` marks it ``stale`` at once (its levels leave the merged book) and resyncs it
the venue's way (``spec.resync``), paced by a per-venue token bucket (option
``quiet_resyncs_per_min``) so that quiet symbols cannot spend the venue's REST weight or message
rate; a resync beyond the budget waits, logged and counted. REST venues also wait for the
symbol's first buffered event: the sequencers refuse a snapshot nothing proves current, so a
fetch before it would cost weight for nothing. The connection's other symbols are not touched
(except for venues whose resync is a reconnect). The price: a symbol that is merely calm for
``quiet_after`` s is taken out of the merged book and resynced too.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

from common.config import VenueConfig
from common.feed import handlers
from common.feed.actions import Action, Fetch, Reconnect, Send
from common.feed.backoff import backoff
from common.feed.outbox import Outbox
from common.feed.quiet import QuietWatch
from common.feed.spec import REST, RESUBSCRIBE, FeedSpec
from common.feed.stream import SymbolStream
from common.feed.types import ParseError, Snapshot, Verdict
from common.logs import RateLimitedLog
from common.schema import DOWN, LIVE, SYNCING, FeedMsg

#: Backoff of repeated resubscriptions of one symbol (s): 0 for the first, then 0.5, 1, 2 ... 30.
RESUBSCRIBE_BASE = 0.5
RESUBSCRIBE_CAP = 30.0
#: Default of the ``quiet_resyncs_per_min`` option: resyncs of quiet symbols a venue's feed may
#: start per minute (and at once). A Binance depth-5000 snapshot weighs 250 of the 6000 allowed a
#: minute: 4 of them use at most 1000 (17 %), leaving the rest to start-ups and gaps.
QUIET_RESYNCS_PER_MIN = 4.0


class FeedCore:
    """One venue's feed process, without I/O. See the module docstring."""

    def __init__(self, spec: FeedSpec, cfg: VenueConfig, opts: dict[str, Any], *, sess: int,
                 log: logging.Logger | None = None, rng: random.Random | None = None) -> None:
        self.spec = spec
        self.cfg = cfg
        self.opts = opts
        self.log = log or logging.getLogger(f"feed.{cfg.id}")
        self.rlog = RateLimitedLog(self.log)
        self.rng = rng or random.Random()
        self.counters: Counter[str] = Counter()
        self.out = Outbox(cfg.id, sess)
        self.actions: list[Action] = []
        self.streams: dict[str, SymbolStream] = {
            s: SymbolStream(s, spec.key_of(s), spec.sequencer()) for s in cfg.symbols}
        self.by_key: dict[str, SymbolStream] = {st.key: st for st in self.streams.values()}
        self.depth = spec.depth_limit(cfg)
        precision = opts.get("precision")
        if precision is not None:
            for st in self.streams.values():
                st.precision = (int(precision[0]), int(precision[1]))
        self.mode = ""                   # the venue's trading mode when it reports one
        self.conn_seq: int | None = None
        self.connected_at: float | None = None
        self.now = 0.0                   # the latest monotonic time an input brought
        self.ending = False              # a Reconnect is queued: ignore further frames
        self.synced_on_conn = False      # a book was published on this connection (backoff reset)
        self.handlers = handlers.Handlers(self)
        for st in self.streams.values():
            st.quiet_after = cfg.quiet_after_for(st.symbol)
        self.quiet = QuietWatch(self, float(opts.get("quiet_resyncs_per_min", QUIET_RESYNCS_PER_MIN)))

    # --- outputs ------------------------------------------------------------------------------

    @property
    def sess(self) -> int:
        return self.out.sess

    def take_bus(self) -> list[FeedMsg]:
        return self.out.take()

    def take_actions(self) -> list[Action]:
        out, self.actions = self.actions, []
        return out

    def flush(self) -> None:
        """Coalesced updates -> one delta per symbol (the transport calls it when idle)."""
        self.out.flush()

    @property
    def pending(self) -> bool:
        return self.out.pending

    @property
    def active(self) -> list[SymbolStream]:
        return [st for st in self.streams.values() if st.listed]

    def heartbeat(self, rts: int) -> None:
        self.out.heartbeat(list(self.streams.values()), rts, self.mode)

    def snapshot_reply(self, wanted: list[str], rts: int) -> list[bytes]:
        """Reply frames to a snapshot request (all symbols when ``wanted`` is empty): a snap
        with the stream's current seq when live, else its status."""
        return self.out.reply(self.streams, wanted, rts, self.depth is not None)

    # --- status -------------------------------------------------------------------------------

    def set_status(self, st: SymbolStream, status: str, reason: str, rts: int) -> None:
        """Publish a status when it changes (a listed symbol only)."""
        if st.listed and st.status != status:
            self.out.status(st, status, reason, rts)
            log = self.log.warning if status in ("stale", DOWN) else self.log.info
            log("%s %s: status %s (%s)", self.cfg.id, st.symbol, status, reason)

    def start(self, rts: int) -> None:
        """Announce every symbol as syncing (the process starts)."""
        for st in self.streams.values():
            self.out.status(st, SYNCING, "starting", rts)

    def unlist(self, st: SymbolStream, why: str, rts: int) -> None:
        """The venue does not carry ``st``: ``down`` for good in this process."""
        self.out.status(st, DOWN, why, rts)
        st.listed = False

    def rekey(self, st: SymbolStream, key: str) -> None:
        """The pair list names ``st`` ``key`` on the venue."""
        del self.by_key[st.key]
        st.key = key
        self.by_key[key] = st

    # --- connection ---------------------------------------------------------------------------

    def connected(self, now: float, rts: int) -> None:
        """A connection is open: subscribe, and every symbol starts (re)building its book."""
        self.connected_at = self.now = now
        self.conn_seq = None
        self.ending = False
        self.synced_on_conn = False
        active = self.active
        self.quiet.forget()
        for st in active:
            st.refused = False
            st.resubs = 0           # a new connection: resubscriptions start afresh
            st.resub_at = None
        frames = self.spec.subscribe(self.cfg, [st.key for st in active])
        if frames:
            self.actions.append(Send(frames))
        for st in active:
            self.resync(st, "connected: building the book", rts, now=now, send=False)

    def disconnected(self, status: str, reason: str, rts: int) -> None:
        """The connection ended: every book is void until the next connection rebuilds it."""
        self.connected_at = None
        self.quiet.forget()
        for st in self.active:
            st.void()
            st.fetching = False
            st.awaiting_since = None
            st.resub_at = None      # a scheduled resubscription belonged to that connection
            self.out.discard(st)
            self.set_status(st, status, reason, rts)

    def resync(self, st: SymbolStream, reason: str, rts: int, *, now: float | None = None,
               reset: bool = True, send: bool = True) -> None:
        """Throw ``st``'s book away and build it again; the other symbols go on. ``reset=False``
        keeps the sequencer's buffer (a gap: the event that revealed it starts the new buffer)."""
        if reset:
            st.seqr.reset()
        st.book.clear()
        st.exact_to = (None, None)
        self.out.discard(st)
        self.set_status(st, SYNCING, reason, rts)
        if self.spec.snapshot == REST:
            if not st.fetching:
                st.fetching = True
                st.delays = backoff(initial=0.25, cap=float(self.opts["snapshot_retry_cap"]), rng=self.rng)
                self.actions.append(Fetch(st.symbol))
            return
        st.awaiting_since = now if now is not None else self.now
        if not send:
            return
        if self.spec.resync == RESUBSCRIBE and self.spec.resubscribe is not None:
            # The first resubscription since the book was last whole goes at once; repeated ones
            # (a checksum that keeps failing) back off, so they cannot exhaust the venue's
            # message rate.
            if st.resub_at is not None:
                return          # a resubscription is already scheduled
            st.resubs += 1
            delay = 0.0 if st.resubs == 1 else min(RESUBSCRIBE_CAP, RESUBSCRIBE_BASE * 2 ** (st.resubs - 2))
            if delay == 0.0:
                self._resubscribe(st)
            else:
                st.resub_at = st.awaiting_since + delay
                self.log.warning("%s %s: resync %d since the book was last whole; resubscribing in %.1f s",
                                 self.cfg.id, st.symbol, st.resubs, delay)
        else:
            self.reconnect(SYNCING, f"{st.symbol}: {reason}; the venue's book comes only with a new "
                                    "connection")

    def _resubscribe(self, st: SymbolStream) -> None:
        assert self.spec.resubscribe is not None
        st.resub_at = None
        st.awaiting_since = self.now
        self.counters["resubscribes"] += 1
        self.actions.append(Send(self.spec.resubscribe(self.cfg, st.key)))

    def reconnect(self, status: str, reason: str) -> None:
        """Ask the transport to end the connection; frames still queued on it are ignored."""
        if not self.ending:
            self.ending = True
            self.actions.append(Reconnect(status, reason))

    def tick(self, now: float, rts: int) -> None:
        """Timeouts: a STREAM symbol still without its book ``snapshot_timeout`` s after its
        (re)subscription resyncs again; a live book unchanged for its ``quiet_after`` goes
        ``stale`` and resyncs within the quiet-resync budget. O(symbols)."""
        self.now = now
        if self.connected_at is None:
            return
        limit = self.spec.snapshot_timeout
        for st in self.active:
            if st.resub_at is not None:
                if now >= st.resub_at and not st.refused:
                    self._resubscribe(st)
                continue
            if st.awaiting_since is not None and not st.refused and now - st.awaiting_since > limit:
                self.counters["snapshot_timeouts"] += 1
                self.log.warning("%s %s: no book %.1f s after subscribing; resyncing", self.cfg.id,
                                 st.symbol, now - st.awaiting_since)
                self.resync(st, f"no book within {limit:g} s of subscribing", rts, now=now)
            elif (st.quiet_after is not None and st.status == LIVE and not self.ending
                  and now - st.changed > st.quiet_after):
                self.quiet.mark(st, now, rts)
        if self.quiet.queue and not self.ending:
            self.quiet.resyncs(now, rts)

    # --- frames -------------------------------------------------------------------------------

    def frame(self, text: str | bytes, rts: int, now: float) -> None:
        """Handle one received frame."""
        self.now = now
        if self.ending:
            self.counters["ignored_after_reconnect"] += 1
            return
        try:
            items = self.spec.parse_frame(text)
        except ParseError as e:
            self.counters["malformed"] += 1
            self.rlog.warning("malformed", "%s: malformed frame dropped: %s", self.cfg.id, e)
            st = self.by_key.get(e.key) if e.key is not None else None
            if st is not None and st.listed:
                self.counters["resync_malformed"] += 1
                self.resync(st, f"malformed update dropped: {e}", rts, now=now)
            for it in e.frames:          # what the frame carried besides the bad part
                if self.handlers.item(it, rts, now):
                    return
            return
        if type(items) is list:
            for it in items:
                if self.handlers.item(it, rts, now):
                    return      # the connection ends: ignore the rest of the frame
        else:
            self.handlers.item(items, rts, now)

    # --- REST snapshots -----------------------------------------------------------------------

    def snapshot_failed(self, symbol: str, why: str, delay: float | None = None) -> None:
        """A snapshot fetch failed; ``delay`` is the venue's own wait (rate limit), else ours."""
        self.handlers.rest_failed(self.streams[symbol], why, delay)

    def snapshot_body(self, symbol: str, body: str | bytes, rts: int) -> None:
        """A REST snapshot arrived: parse it and let the sequencer judge it."""
        self.handlers.rest_body(self.streams[symbol], body, rts)

    def synced(self, st: SymbolStream, snap: Snapshot | None, rts: int, applied: int) -> None:
        """``st``'s book is whole again: publish it (the stream is live)."""
        st.fetching = False
        st.awaiting_since = None
        st.resubs = 0
        st.resub_at = None
        st.rts = rts
        st.changed = self.now
        st.status, st.reason = LIVE, "synced"
        self.out.snap(st, self.depth is not None)
        self.synced_on_conn = True
        self.counters["syncs"] += 1
        self.log.info("%s %s: synced (%s, %d buffered events applied): %d bids / %d asks", self.cfg.id,
                      st.symbol, "REST snapshot" if self.spec.snapshot == REST else "venue's book",
                      applied, len(st.book.bids), len(st.book.asks))


__all__ = ["Action", "FeedCore", "Fetch", "Reconnect", "Send", "Verdict"]
