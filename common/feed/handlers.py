"""What the feed core does with each parsed item: book updates and snapshots through the
symbol's sequencer, the venue's controls, the connection's sequence number. Pure, like the core
it belongs to (:mod:`common.feed.core`): it changes books and queues bus messages and actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.feed.actions import Fetch
from common.feed.types import ConnSeq, Control, ControlKind, DepthEvent, ParseError, Snapshot, Verdict
from common.schema import DOWN, LIVE, SYNCING

if TYPE_CHECKING:
    from common.feed.core import FeedCore
    from common.feed.stream import SymbolStream

#: Venue modes in which books are not valid (no matching, no book): symbols go ``down``.
OFFLINE_MODES = frozenset(("maintenance",))


def _where(core: FeedCore, where: str | DepthEvent) -> str:
    return where if isinstance(where, str) else f"{core.spec.id_name} {where.last}"


class Handlers:
    """The item handlers of one :class:`~common.feed.core.FeedCore`."""

    def __init__(self, core: FeedCore) -> None:
        self.core = core
        self.levels_in = 0          # levels of the depth events received for listed symbols

    def item(self, it: object, rts: int, now: float) -> bool:
        """Handle one parsed item; True when the connection is to end (the core queued a
        Reconnect), so the rest of the frame is ignored."""
        t = type(it)
        if t is DepthEvent:
            self.event(it, rts, now)  # type: ignore[arg-type]
        elif t is Snapshot:
            self.stream_snapshot(it, rts, now)  # type: ignore[arg-type]
        elif t is Control:
            return self.control(it, rts, now)  # type: ignore[arg-type]
        elif t is ConnSeq:
            return self.conn_seq(it.n, rts)  # type: ignore[attr-defined]
        return False

    def _stream(self, key: str) -> SymbolStream | None:
        st = self.core.by_key.get(key)
        if st is None or not st.listed:
            self.core.counters["unknown_symbol"] += 1
            return None
        if self.core.mode in OFFLINE_MODES:
            self.core.counters["dropped_offline"] += 1
            return None
        return st

    # --- book ---------------------------------------------------------------------------------

    def event(self, ev: DepthEvent, rts: int, now: float) -> None:
        core = self.core
        st = self._stream(ev.key)
        if st is None:
            return
        self.levels_in += len(ev.bids) + len(ev.asks)   # per event, never per level (metrics read it)
        seqr = st.seqr
        before = seqr.position
        v = seqr.on_event(ev)
        if v is Verdict.APPLY:
            st.book.apply_levels(ev.bids, ev.asks)
            bids, asks = core.out.levels(st, ev.ets, rts)
            bids.update(ev.bids)        # later levels of one price replace earlier ones, as in the book
            asks.update(ev.asks)
            st.ets, st.rts, st.changed = ev.ets, rts, now   # quiet_after: the book changed
            self.checked(st, ev.checksum, bids, asks, rts, now, ev)
        elif v is Verdict.SNAPSHOT:
            if st.awaiting_since is None:
                # Not after a (re)subscription (a quiet symbol waiting for its resync, a refused
                # one): this event continues a book we no longer hold; it is not a whole book.
                seqr.reset()
                core.counters["dropped_not_a_book"] += 1
                return
            st.ets = ev.ets
            self.loaded(st, ev.bids, ev.asks, ev.checksum, rts, now)
        elif v is Verdict.DROP:
            core.counters["dropped_stale"] += 1
        elif v is Verdict.BUFFERED:
            core.counters["buffered"] += 1
        elif v is Verdict.GAP:
            core.counters["gaps"] += 1
            core.log.warning("%s %s: gap: event %s %d..%d does not follow the book at %s; resyncing",
                             core.cfg.id, st.symbol, core.spec.id_name, ev.first, ev.last, before)
            core.resync(st, f"gap before {core.spec.id_name} {ev.first}", rts, now=now, reset=False)

    def checked(self, st: SymbolStream, checksum: int | None, bids: dict, asks: dict, rts: int,
                now: float, where: str | DepthEvent) -> bool:
        """After an applied message: truncate, then the crossed-book and checksum checks. False
        (and the symbol resyncs) when one fails. ``where`` names the message in logs (an event
        is named by its id, formatted only when a check fails)."""
        core = self.core
        spec = core.spec
        if spec.truncate and core.depth is not None:
            core.counters["truncated"] += st.truncate(core.depth, bids, asks)
        book = st.book
        if spec.resync_on_crossed and book.crossed():
            core.counters["resync_crossed"] += 1
            bid, ask = book.best()
            core.log.warning("%s %s: book crossed after %s (bid %s >= ask %s); resyncing", core.cfg.id,
                             st.symbol, _where(core, where), bid[0] if bid else None, ask[0] if ask else None)
            core.resync(st, "crossed book", rts, now=now)
            return False
        if checksum is None or spec.checksum is None:
            return True
        got = st.verify(spec.checksum, checksum)
        if got is not None:
            core.counters["checksum_failures"] += 1
            core.log.warning("%s %s: checksum mismatch after %s: venue %d, ours %d; resyncing this symbol",
                             core.cfg.id, st.symbol, _where(core, where), checksum, got)
            core.resync(st, f"checksum mismatch (venue {checksum}, ours {got})", rts, now=now)
            return False
        return True

    def stream_snapshot(self, snap: Snapshot, rts: int, now: float) -> None:
        """The venue's in-band book: it replaces ours."""
        st = self._stream(snap.key)
        if st is None:
            return
        verdict, _ = st.seqr.on_snapshot(snap)
        if verdict is not Verdict.SYNCED:   # pragma: no cover - stream sequencers always sync
            return
        st.ets = snap.ets
        self.loaded(st, snap.bids, snap.asks, snap.checksum, rts, now)

    def loaded(self, st: SymbolStream, bids: list, asks: list, checksum: int | None, rts: int, now: float) -> None:
        """``st``'s book replaced by a whole one; published when it passes the checks."""
        st.load(bids, asks, self.core.depth)
        self.core.out.discard(st)
        if self.checked(st, checksum, {}, {}, rts, now, "the venue's snapshot"):
            self.core.synced(st, None, rts, 0)

    def rest_failed(self, st: SymbolStream, why: str, delay: float | None) -> None:
        core = self.core
        if not st.fetching:
            return
        core.counters["snapshot_errors" if delay is None else "rest_rate_limited"] += 1
        d = delay if delay is not None else next(st.delays)  # type: ignore[call-overload]
        core.log.warning("%s %s: snapshot failed: %s; retrying in %.3f s", core.cfg.id, st.symbol, why, d)
        core.actions.append(Fetch(st.symbol, d))

    def rest_body(self, st: SymbolStream, body: str | bytes, rts: int) -> None:
        if not st.fetching:
            return      # the connection ended meanwhile: this answer is of no use
        assert self.core.spec.parse_snapshot is not None
        try:
            snap = self.core.spec.parse_snapshot(body, st.key)
        except ParseError as e:
            self.rest_failed(st, f"does not parse: {e}", None)
            return
        self.rest_snapshot(st, snap, rts)

    def refetch(self, st: SymbolStream, why: str) -> None:
        d = next(st.delays)  # type: ignore[call-overload]
        self.core.log.info("%s %s: %s; refetching in %.3f s", self.core.cfg.id, st.symbol, why, d)
        self.core.actions.append(Fetch(st.symbol, d))

    def rest_snapshot(self, st: SymbolStream, snap: Snapshot, rts: int) -> None:
        core = self.core
        name = core.spec.id_name
        nbuf = st.seqr.buffered
        verdict, events = st.seqr.on_snapshot(snap)
        core.log.info("%s %s: snapshot fetched: %s %d, %d bids / %d asks, %d events buffered -> %s",
                      core.cfg.id, st.symbol, name, snap.last, len(snap.bids), len(snap.asks), nbuf, verdict.value)
        if verdict is Verdict.REFETCH:
            core.counters["snapshot_refetch"] += 1
            self.refetch(st, f"snapshot {name} {snap.last} is not proven current (older than the first "
                             "buffered event, or no event buffered yet)")
            return
        if verdict is Verdict.GAP:
            core.counters["gaps"] += 1
            core.log.warning("%s %s: gap inside the buffered events after %s %d; refetching", core.cfg.id,
                             st.symbol, name, snap.last)
            core.actions.append(Fetch(st.symbol))
            return
        st.load(snap.bids, snap.asks, core.depth)
        for ev in events:
            st.book.apply_levels(ev.bids, ev.asks)
        if core.spec.resync_on_crossed and st.book.crossed():
            core.counters["resync_crossed"] += 1
            core.log.warning("%s %s: book crossed right after sync at %s %d; refetching", core.cfg.id,
                             st.symbol, name, events[-1].last if events else snap.last)
            st.seqr.reset()
            st.book.clear()
            self.refetch(st, "crossed right after sync")
            return
        st.ets = events[-1].ets if events else snap.ets
        core.synced(st, snap, rts, len(events))

    # --- controls -----------------------------------------------------------------------------

    def conn_seq(self, n: int, rts: int) -> bool:
        """The connection's sequence number must grow by one per message."""
        core = self.core
        last, core.conn_seq = core.conn_seq, n
        if last is None or n == last + 1:
            return False
        core.counters["conn_seq_gaps"] += 1
        core.log.warning("%s: connection sequence jumped from %d to %d: messages were lost; every symbol "
                         "of the connection resyncs", core.cfg.id, last, n)
        core.reconnect(SYNCING, f"sequence_num jumped from {last} to {n}")
        return True

    def control(self, c: Control, rts: int, now: float) -> bool:
        core = self.core
        k = c.kind
        if k is ControlKind.RECONNECT:
            core.counters["venue_reconnect_requests"] += 1
            core.reconnect(DOWN, f"venue asked to reconnect: {c.detail}")
            return True
        if k is ControlKind.ERROR:
            core.counters["venue_errors"] += 1
            core.rlog.warning("venue_error", "%s: venue error: %s", core.cfg.id, c.detail)
        elif k is ControlKind.ACK:
            core.log.info("%s: subscribed %s", core.cfg.id, c.detail or c.key or "")
        elif k is ControlKind.HEARTBEAT:
            core.counters["heartbeat_replies"] += 1
        elif k is ControlKind.MODE:
            self.mode(c.detail, rts, now)
        elif k is ControlKind.INSTRUMENT:
            st = core.by_key.get(c.key or "")
            if st is not None and isinstance(c.value, tuple) and len(c.value) == 2:
                st.precision = (int(c.value[0]), int(c.value[1]))
        elif k is ControlKind.SYMBOL_ERROR:
            st = core.by_key.get(c.key or "")
            core.counters["symbol_errors"] += 1
            if st is not None and st.listed:
                st.refused = True
                st.awaiting_since = None
                st.void()
                core.out.discard(st)
                core.log.error("%s %s: the venue refused the subscription: %s", core.cfg.id, st.symbol, c.detail)
                core.set_status(st, DOWN, f"refused by {core.cfg.id}: {c.detail}"[:200], rts)
        return False

    def mode(self, mode: str, rts: int, now: float) -> None:
        """The venue's trading mode. In maintenance no book is valid: every symbol goes ``down``
        until the venue is back, then resyncs. ``cancel_only``/``post_only`` keep the books
        ``live`` (they still change); the mode is on every heartbeat."""
        core = self.core
        old, core.mode = core.mode, mode
        if mode == old:
            return
        core.log.warning("%s: venue mode %s -> %s", core.cfg.id, old or "(none)", mode)
        core.heartbeat(rts)    # tell the bus now, not at the next heartbeat
        if mode in OFFLINE_MODES:
            for st in core.active:
                st.void()
                st.awaiting_since = None
                core.out.discard(st)
                core.set_status(st, DOWN, f"venue {mode}", rts)
        elif old in OFFLINE_MODES and core.connected_at is not None:
            for st in core.active:
                if st.status != LIVE and not st.refused:
                    core.resync(st, f"venue back from {old}", rts, now=now)
