"""What a feed tells the bus, in order, with each stream's ``seq``: snaps, statuses, heartbeats,
and applied updates coalesced into one delta per symbol until :meth:`Outbox.flush`. Pure: the
transport takes the messages with :meth:`Outbox.take` and sends them.

Coalescing: every update applied between two flushes goes out as ONE delta per symbol (a later
size at a price replaces an earlier one: sizes are absolute). The transport flushes as soon as its
event loop is free, so idle that is right after the frame; under load it cuts bus messages,
ZeroMQ wake-ups and the aggregator's per-message cost. Anything else published for a symbol
(a status, a snap) flushes first, so each stream stays in order.
"""

from __future__ import annotations

from decimal import Decimal

from common.feed.stream import SymbolStream
from common.schema import DELTA, DOWN, LIVE, SNAP, BookMsg, FeedMsg, HeartbeatMsg, StatusMsg, encode_feed_payload


class _Pending:
    __slots__ = ("asks", "bids", "ets", "exact", "rts", "st")

    def __init__(self, st: SymbolStream) -> None:
        self.st = st
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.ets = 0
        self.rts = 0
        self.exact = st.exact_to


class Outbox:
    """Bus messages of one feed process, for venue ``venue`` in feed session ``sess``."""

    def __init__(self, venue: str, sess: int) -> None:
        self.venue = venue
        self.sess = sess
        self._out: list[FeedMsg] = []
        self._pending: dict[str, _Pending] = {}
        self.deltas = 0

    @property
    def pending(self) -> bool:
        """Updates wait for :meth:`flush`."""
        return bool(self._pending)

    def take(self) -> list[FeedMsg]:
        """The messages to send, oldest first (pending deltas stay pending)."""
        out, self._out = self._out, []
        return out

    def levels(self, st: SymbolStream, ets: int, rts: int) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """The pending (bids, asks) of ``st`` to add applied levels to; stamps the delta."""
        p = self._pending.get(st.symbol)
        if p is None:
            p = self._pending[st.symbol] = _Pending(st)
        p.ets, p.rts = ets, rts
        return p.bids, p.asks

    def flush(self) -> None:
        """Turn pending updates into one delta per symbol (in the order the symbols first queued)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for p in pending.values():
            st = p.st
            st.seq += 1
            exact = st.exact_to if st.exact_to != p.exact else None
            self._out.append(BookMsg(DELTA, self.venue, st.symbol, self.sess, st.seq, p.ets, p.rts,
                                     list(p.bids.items()), list(p.asks.items()), exact))
        self.deltas += len(pending)

    def discard(self, st: SymbolStream) -> None:
        """Drop ``st``'s pending updates (its book is void: a status follows)."""
        self._pending.pop(st.symbol, None)

    def snap(self, st: SymbolStream, depth_capped: bool) -> None:
        """Publish ``st``'s whole book: the stream is ``live`` from here."""
        self.flush()
        self._out.append(self.snap_msg(st, depth_capped, bump=True))

    def snap_msg(self, st: SymbolStream, depth_capped: bool, *, bump: bool = False) -> BookMsg:
        """The snap of ``st`` (with the next seq when ``bump``, else its current seq)."""
        if bump:
            st.seq += 1
        return BookMsg(SNAP, self.venue, st.symbol, self.sess, st.seq, st.ets, st.rts,
                       st.book.levels(0), st.book.levels(1), st.exact_to if depth_capped else None)

    def reply(self, streams: dict[str, SymbolStream], wanted: list[str], rts: int, depth_capped: bool) -> list[bytes]:
        """Reply frames to a snapshot request (all of ``streams`` when ``wanted`` is empty): a snap
        with the stream's current seq when live, else its status; each symbol once."""
        self.flush()      # the reply's seq must cover every change already in the book
        out = []
        for s in dict.fromkeys(wanted) if wanted else list(streams):
            st = streams.get(s)
            msg: FeedMsg
            if st is None:
                msg = StatusMsg(self.venue, s, self.sess, 0, DOWN, "symbol not carried by this feed", rts)
            elif st.status == LIVE:
                msg = self.snap_msg(st, depth_capped)
            else:
                msg = StatusMsg(self.venue, s, self.sess, st.seq, st.status, st.reason, rts)
            out.append(encode_feed_payload(msg))
        return out

    def status(self, st: SymbolStream, status: str, reason: str, rts: int) -> None:
        """Publish a status of ``st`` (its pending updates, if any, are dropped: the book is void)."""
        self.discard(st)
        self.flush()
        st.seq += 1
        st.status, st.reason = status, reason
        self._out.append(StatusMsg(self.venue, st.symbol, self.sess, st.seq, status, reason, rts))

    def heartbeat(self, streams: list[SymbolStream], rts: int, mode: str) -> None:
        """Publish a heartbeat with every stream's last seq (after flushing, so they are current)."""
        self.flush()
        self._out.append(HeartbeatMsg(self.venue, self.sess, rts, {st.symbol: st.seq for st in streams}, mode))
