"""The client library: typed merged books from a bookmux publisher, and depletion queries.

Three lines (re-exported by :mod:`services.client`)::

    from services.client import subscribe
    for book in subscribe("tcp://127.0.0.1:50052", "BTC/USDT"):
        print(book.seq, book.spread, book.bids[0].price, book.venues)

What it does for you (the subscriber contract of the README):

* **exact topics**: ZeroMQ matches subscriptions by prefix (``book.BTC/USD`` also receives
  ``book.BTC/USDT``); only the symbols asked for are yielded, the others are counted in
  ``foreign`` and dropped;
* **typed books** (:class:`common.schema.MergedBook`): prices, amounts, spread and the depletion
  summary as exact ``Decimal``; levels as ``(price, amount, venue)``; venue statuses, ``epoch``,
  ``seq``, ``ts``, ``venue_ts`` freshness, and any key this library does not know in ``extra``;
* **sequence checks** per symbol: ``book.missed`` is the number of snapshots of that symbol lost
  right before this one (a jump in ``seq``), ``book.new_epoch`` is True on the first book after
  the aggregator restarted; the subscription counts both (``missed``, ``epochs``) and never hides
  a book because of them. A book at or below the last ``seq`` of its epoch (the same publisher
  reached twice) is dropped and counted in ``duplicates``; a malformed message is dropped,
  counted in ``malformed`` and logged;
* **CURVE** (:class:`CurveKeys`) when the deployment runs with ``[security] curve = true``;
* **timeout**: with ``timeout=T`` seconds, waiting longer than T for the next book raises
  :class:`SubscriptionTimeout` (a ``TimeoutError``); the subscription stays usable, iterate on or
  call :meth:`Subscription.recv` again. ``timeout=None`` (the default) waits forever.
* **latest only** (``latest_only=True``, endpoint: the publisher's ``latest_port``, 50056): instead
  of a SUB queue of every snapshot, each book is fetched on demand from the publisher's latest
  endpoint (protocol in :mod:`common.schema`, "Latest endpoint"), so a reader that stalls and
  comes back gets the newest book of each symbol, never a backlog. Snapshots skipped that way are
  counted in ``book.conflated`` and ``conflated``, never in ``missed`` (nothing was lost). Nothing
  is queued for the subscription between two reads; each read costs one round trip.

Blocking: :func:`subscribe` -> :class:`Subscription` (an iterator and a context manager).
asyncio: :func:`asubscribe` -> :class:`AsyncSubscription` (``async for book in asubscribe(...)``).
Depletion: :func:`deplete` asks the aggregator's query endpoint (protocol in :mod:`common.query`), or
with ``[[aggregator.shards]]`` the query endpoint of the shard owning the symbol.

The bookkeeping is a pure core (:class:`BookTracker`: frames in, typed book or None out) under
two thin socket wrappers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq
import zmq.asyncio

from common.config import SYMBOL_RE
from common.query import QueryError, Reply, decode_reply, encode_request, endpoint_for
from common.schema import (
    BusError,
    LatestRequest,
    MergedBook,
    book_topic,
    decode_latest_answer,
    decode_merged,
    decode_merged_payload,
    encode_latest_request,
    peek_merged,
)

log = logging.getLogger("subscriber")

__all__ = [
    "AsyncSubscription",
    "BookTracker",
    "CurveKeys",
    "LatestClient",
    "QueryRefused",
    "QueryTimeout",
    "Subscription",
    "SubscriptionRefused",
    "SubscriptionTimeout",
    "asubscribe",
    "deplete",
    "subscribe",
]

# Limits
#: Largest message accepted from the publisher (ZeroMQ cuts a peer that sends more).
MAX_MSG_SIZE = 16 << 20
#: Receive high-water mark: snapshots queued for a slow reader before ZeroMQ drops (seen as
#: ``missed``: every snapshot is a full state, so only intermediate states are lost).
RCVHWM = 1000
#: Latest-only: how long the publisher may hold a request when nothing is newer (it then answers
#: with no books and the subscription asks again).
LATEST_WAIT = 5.0
#: Latest-only: extra time for an answer before the request is taken as lost (the publisher
#: restarted) and sent again; and how long a refresh may take before the books already fetched
#: are yielded without it.
RESEND_GRACE = 2.0
REFRESH_GRACE = 1.0


class SubscriptionTimeout(TimeoutError):
    """No book of the subscribed symbols arrived within the subscription's ``timeout``."""


class SubscriptionRefused(RuntimeError):
    """The publisher's latest endpoint refused a request (the message is its own)."""


class QueryTimeout(TimeoutError):
    """The query endpoint did not answer within ``timeout`` (is the aggregator running?)."""


class QueryRefused(QueryError):
    """The aggregator answered the depletion request with an error (the message is its own)."""


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """CURVE keys of a client: the server's public key and our own key pair (Z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: str | Path, client_key: str | Path) -> CurveKeys:
        """From ``keys/server.key`` (the publisher's public key) and our ``.key_secret`` file
        (e.g. ``keys/subscriber.key_secret``, whose public key the server allows). Raises
        ``OSError``/``ValueError`` naming the file when one is missing or holds no secret."""
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(Path(server_key))
        public, secret = zmq.auth.load_certificate(Path(client_key))
        if secret is None:
            raise ValueError(f"{client_key} holds no secret key (give the .key_secret file)")
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before connect) a CURVE client of the server."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public


def _symbols(symbols: str | Iterable[str] | None) -> tuple[str, ...]:
    if symbols is None:
        return ()
    items = [symbols] if isinstance(symbols, str) else list(symbols)
    out = []
    for s in items:
        if not isinstance(s, str) or not SYMBOL_RE.match(s.upper()):
            raise ValueError(f"{s!r} is not a symbol like BTC/USDT")
        out.append(s.upper())
    return tuple(dict.fromkeys(out))


class BookTracker:
    """The pure core of a subscription: frames in, a typed book (or None: dropped) out.

    Checks the topic exactly, decodes (:func:`common.schema.decode_merged`), follows ``epoch``
    and ``seq`` per symbol and counts what it sees. No sockets, no clock (``received_ns`` is
    given). O(levels) per message.

    ``conflating=True`` (latest-only subscriptions): a jump in ``seq`` counts as ``conflated``
    (skipped on purpose by the publisher), not as ``missed``.
    """

    def __init__(self, symbols: str | Iterable[str] | None = None, *, conflating: bool = False) -> None:
        self.symbols = _symbols(symbols)
        self.conflating = conflating
        #: Exact topics accepted; None: every ``book.*`` topic.
        self.topics: frozenset[bytes] | None = frozenset(book_topic(s) for s in self.symbols) or None
        #: Last ``(epoch, seq)`` yielded per symbol.
        self.position: dict[str, tuple[int, int]] = {}
        # Counters
        self.received = 0      # books yielded
        self.missed = 0        # snapshots lost (seq jumps within an epoch), over all symbols
        self.epochs = 0        # epoch changes seen (aggregator restarts), over all symbols
        self.duplicates = 0    # books at or below the last seq of their epoch: dropped
        self.malformed = 0     # undecodable messages: dropped
        self.foreign = 0       # other topics matching a subscription's prefix: dropped
        self.conflated = 0     # snapshots skipped on purpose (latest-only), over all symbols

    def subscriptions(self) -> list[bytes]:
        """The ZeroMQ prefixes to subscribe to."""
        return sorted(self.topics) if self.topics is not None else [b"book."]

    def accept(self, frames: Sequence[bytes], received_ns: int = 0) -> MergedBook | None:
        """One message off the SUB socket -> the typed book to yield, or None (dropped, counted)."""
        if self.topics is not None and (not frames or bytes(frames[0]) not in self.topics):
            self.foreign += 1
            return None
        try:
            book = decode_merged(frames)
        except BusError as e:
            self.malformed += 1
            self._log_malformed(e)
            return None
        return self.track(book, received_ns)

    def _log_malformed(self, e: Exception) -> None:
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning("dropped a malformed snapshot (%d so far): %s", self.malformed, e)

    def track(self, book: MergedBook, received_ns: int = 0) -> MergedBook | None:
        """A decoded book -> itself with the receiver's view set, or None (a duplicate, dropped)."""
        prev = self.position.get(book.symbol)
        if prev is not None:
            if prev[0] != book.epoch:
                book.new_epoch = True
                self.epochs += 1
            elif book.seq <= prev[1]:
                self.duplicates += 1
                return None
            elif book.seq != prev[1] + 1:
                if self.conflating:
                    book.conflated = book.seq - prev[1] - 1
                    self.conflated += book.conflated
                else:
                    book.missed = book.seq - prev[1] - 1
                    self.missed += book.missed
        self.position[book.symbol] = (book.epoch, book.seq)
        book.received_ns = received_ns
        self.received += 1
        return book


class LatestClient:
    """The pure core of a latest-only subscription: requests out, answers in, books out.

    :meth:`request` builds the next request (the symbols, what is already held, and how long the
    publisher may hold it: 0 while fetched books wait to be taken, so they are only refreshed,
    else ``wait``); :meth:`on_answer` keeps the newest book per symbol from any answer;
    :meth:`take` yields the fetched books once the last request is answered, in the order their
    symbols were fetched (a newer book of a symbol waiting to be taken keeps that symbol's turn).
    Only the last request's answer ends a wait: an answer to an earlier one (a read that timed out)
    still brings books, never older ones than held. Memory: one undecoded book per symbol.
    No sockets, no clock (times are given).
    """

    def __init__(self, tracker: BookTracker, *, wait: float = LATEST_WAIT) -> None:
        self.tracker = tracker
        self.wait = wait
        #: symbol -> (epoch, seq, payload map, receive time ns): fetched, not yet taken.
        self.pending: dict[str, tuple[int, int, dict[str, Any], int]] = {}
        #: id of the request whose answer is awaited (None: answered).
        self.outstanding: int | None = None
        #: monotonic time by which the awaited answer is due (then: asked again, or books taken).
        self.due = 0.0
        self._last_id = 0
        self.requests = 0
        self.answers = 0

    def request(self, now: float) -> bytes:
        """The next request; from now on only its answer ends the wait."""
        self._last_id += 1
        self.requests += 1
        self.outstanding = self._last_id
        have = {s: (e, q) for s, (e, q) in self.tracker.position.items()}
        have.update({s: (p[0], p[1]) for s, p in self.pending.items()})
        wait = 0.0 if self.pending else self.wait
        self.due = now + (wait + RESEND_GRACE if wait else REFRESH_GRACE)
        return encode_latest_request(LatestRequest(self._last_id, self.tracker.symbols, have, wait))

    def on_answer(self, frames: Sequence[bytes], received_ns: int) -> None:
        """One answer off the socket. Raises :class:`SubscriptionRefused` when the publisher
        refused the awaited request; anything malformed is counted and dropped."""
        t = self.tracker
        try:
            answer = decode_latest_answer(frames)
        except BusError as e:
            t.malformed += 1
            t._log_malformed(e)
            return
        if answer.id == self.outstanding:
            self.outstanding = None
            if answer.kind == "error":
                raise SubscriptionRefused(f"the publisher refused the request: {answer.error}")
        self.answers += 1
        for pair in answer.books:
            if t.topics is not None and pair[0] not in t.topics:
                t.foreign += 1
                continue
            try:
                m, symbol, epoch, seq = peek_merged(pair)
            except BusError as e:
                t.malformed += 1
                t._log_malformed(e)
                continue
            held = self.pending.get(symbol) or t.position.get(symbol)
            if held is None or held[0] != epoch or seq > held[1]:
                self.pending[symbol] = (epoch, seq, m, received_ns)

    def take(self, *, force: bool = False) -> MergedBook | None:
        """The next fetched book once the last request is answered (``force``: even if not),
        or None."""
        if self.outstanding is not None and not force:
            return None
        t = self.tracker
        while self.pending:
            symbol = next(iter(self.pending))
            _e, _q, m, received_ns = self.pending.pop(symbol)
            try:
                book = decode_merged_payload(m)
            except BusError as e:
                t.malformed += 1
                t._log_malformed(e)
                continue
            got = t.track(book, received_ns)
            if got is not None:
                return got
        return None


class _Base:
    """What both flavours share: the tracker, the settings, the counters and the last books."""

    _timeout: float | None

    def __init__(self, symbols: str | Iterable[str] | None, timeout: float | None, latest_only: bool) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        self.tracker = BookTracker(symbols, conflating=latest_only)
        self.latest_only = latest_only
        self._latest = LatestClient(self.tracker) if latest_only else None
        self._timeout = timeout
        self.closed = False
        #: The last book yielded per symbol.
        self.last: dict[str, MergedBook] = {}

    @staticmethod
    def _setup(sock: zmq.Socket, endpoints: str | Sequence[str], tracker: BookTracker, curve: CurveKeys | None,
               hwm: int) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_SIZE)
        for t in tracker.subscriptions():
            sock.setsockopt(zmq.SUBSCRIBE, t)
        if curve is not None:
            curve.apply(sock)
        for e in [endpoints] if isinstance(endpoints, str) else endpoints:
            sock.connect(e)

    @staticmethod
    def _setup_latest(sock: zmq.Socket, endpoint: str | Sequence[str], curve: CurveKeys | None) -> None:
        eps = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if len(eps) != 1:
            raise ValueError(f"latest_only takes one endpoint (the publisher's latest_port), got {eps!r}")
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 2)      # requests to a publisher that is down: few, then dropped
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_SIZE)
        if curve is not None:
            curve.apply(sock)
        sock.connect(eps[0])

    def _taken(self, book: MergedBook | None) -> MergedBook | None:
        if book is not None:
            self.last[book.symbol] = book
        return book

    def _wait(self, timeout: float | None) -> float | None:
        """Seconds to wait (None: forever) for a per-call ``timeout`` (None: the subscription's)."""
        wait = self._timeout if timeout is None else timeout
        return None if wait is None or wait == math.inf else wait

    def _took(self, frames: Sequence[bytes]) -> MergedBook | None:
        book = self.tracker.accept(frames, time.time_ns())
        if book is not None:
            self.last[book.symbol] = book
        return book

    def _timed_out(self, timeout: float | None) -> SubscriptionTimeout:
        return SubscriptionTimeout(f"no book of {', '.join(self.tracker.symbols) or 'any symbol'} within "
                                   f"{timeout:g} s (is the publisher running?)")

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols subscribed to (empty: every symbol)."""
        return self.tracker.symbols

    @property
    def received(self) -> int:
        """Books yielded."""
        return self.tracker.received

    @property
    def missed(self) -> int:
        """Snapshots lost over all symbols (``seq`` jumps within an epoch)."""
        return self.tracker.missed

    @property
    def epochs(self) -> int:
        """Epoch changes seen (aggregator restarts), over all symbols."""
        return self.tracker.epochs

    @property
    def conflated(self) -> int:
        """Latest-only: snapshots skipped on purpose (only the newest was fetched), all symbols."""
        return self.tracker.conflated

    @property
    def duplicates(self) -> int:
        return self.tracker.duplicates

    @property
    def malformed(self) -> int:
        return self.tracker.malformed

    @property
    def foreign(self) -> int:
        """Messages of other symbols that only matched by prefix (dropped)."""
        return self.tracker.foreign


class Subscription(_Base):
    """A blocking subscription: iterate for books (see the module docstring).

    ``for book in sub`` stops only when :meth:`close` was called; with a ``timeout`` it raises
    :class:`SubscriptionTimeout` and may be resumed. Not thread-safe (one ZeroMQ socket).
    """

    def __init__(self, endpoint: str | Sequence[str], symbols: str | Iterable[str] | None = None, *,
                 timeout: float | None = None, curve: CurveKeys | None = None, ctx: zmq.Context | None = None,
                 hwm: int = RCVHWM, latest_only: bool = False) -> None:
        super().__init__(symbols, timeout, latest_only)
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER if latest_only else zmq.SUB)
        try:
            if latest_only:
                self._setup_latest(self.sock, endpoint, curve)
            else:
                self._setup(self.sock, endpoint, self.tracker, curve, hwm)
        except BaseException:
            self.sock.close(0)
            raise

    def recv(self, timeout: float | None = None) -> MergedBook:
        """The next book; waits at most ``timeout`` seconds (None: the subscription's timeout;
        ``math.inf``: forever), then raises :class:`SubscriptionTimeout`. Raises
        ``zmq.ZMQError`` once closed."""
        wait = self._wait(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        if self._latest is not None:
            return self._recv_latest(self._latest, wait, deadline)
        while True:
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())   # 0: take only what is queued
                if not self.sock.poll(math.ceil(left * 1000)):
                    raise self._timed_out(wait)
            book = self._took(self.sock.recv_multipart())
            if book is not None:
                return book

    def _ask(self, c: LatestClient) -> None:
        try:
            self.sock.send(c.request(time.monotonic()), zmq.NOBLOCK)
        except zmq.Again:
            pass   # the publisher is unreachable: asked again when the answer is due

    def _recv_latest(self, c: LatestClient, wait: float | None, deadline: float | None) -> MergedBook:
        """One round trip (more after an empty or lost answer): drain answers that came while the
        application was away, ask for what is newer than what is held, take a book."""
        while self.sock.poll(0):   # answers that came while the application was away: refreshed below
            c.on_answer(self.sock.recv_multipart(), time.time_ns())
        self._ask(c)
        while True:
            book = self._taken(c.take())
            if book is not None:
                return book
            if c.outstanding is None:   # answered with nothing newer (the publisher's wait ran out)
                self._ask(c)
                continue
            now = time.monotonic()
            until = c.due if deadline is None else min(c.due, deadline)
            if not self.sock.poll(max(0, math.ceil((until - now) * 1000))):
                book = self._taken(c.take(force=True))   # the refresh is late: what was fetched
                if book is not None:
                    return book
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(wait)
                self._ask(c)   # lost (the publisher restarted?): ask again
                continue
            c.on_answer(self.sock.recv_multipart(), time.time_ns())

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> MergedBook:
        if self.closed:
            raise StopIteration
        return self.recv()

    def close(self) -> None:
        """Close the socket (idempotent); iteration stops."""
        if not self.closed:
            self.closed = True
            self.sock.close(0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncSubscription(_Base):
    """The asyncio flavour of :class:`Subscription`: ``async for book in sub``, ``await sub.recv()``,
    ``async with``; same counters, same timeout rule."""

    def __init__(self, endpoint: str | Sequence[str], symbols: str | Iterable[str] | None = None, *,
                 timeout: float | None = None, curve: CurveKeys | None = None, ctx: zmq.Context | None = None,
                 hwm: int = RCVHWM, latest_only: bool = False) -> None:
        super().__init__(symbols, timeout, latest_only)
        base = ctx or zmq.Context.instance()
        actx = base if isinstance(base, zmq.asyncio.Context) else zmq.asyncio.Context.shadow(base.underlying)
        self.sock = actx.socket(zmq.DEALER if latest_only else zmq.SUB)
        try:
            if latest_only:
                self._setup_latest(self.sock, endpoint, curve)
            else:
                self._setup(self.sock, endpoint, self.tracker, curve, hwm)
        except BaseException:
            self.sock.close(0)
            raise

    async def recv(self, timeout: float | None = None) -> MergedBook:
        """The next book; waits at most ``timeout`` seconds (None: the subscription's timeout;
        ``math.inf``: forever), then raises :class:`SubscriptionTimeout`."""
        wait = self._wait(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        if self._latest is not None:
            return await self._recv_latest(self._latest, wait, deadline)
        while True:
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())   # 0: take only what is queued
                if not await self.sock.poll(math.ceil(left * 1000)):
                    raise self._timed_out(wait)
            book = self._took(await self.sock.recv_multipart())
            if book is not None:
                return book

    async def _ask(self, c: LatestClient) -> None:
        try:
            await self.sock.send(c.request(time.monotonic()), zmq.NOBLOCK)
        except zmq.Again:
            pass   # the publisher is unreachable: asked again when the answer is due

    async def _recv_latest(self, c: LatestClient, wait: float | None, deadline: float | None) -> MergedBook:
        """:meth:`Subscription._recv_latest` with awaits (same steps, same rules)."""
        while await self.sock.poll(0):
            c.on_answer(await self.sock.recv_multipart(), time.time_ns())
        await self._ask(c)
        while True:
            book = self._taken(c.take())
            if book is not None:
                return book
            if c.outstanding is None:
                await self._ask(c)
                continue
            now = time.monotonic()
            until = c.due if deadline is None else min(c.due, deadline)
            if not await self.sock.poll(max(0, math.ceil((until - now) * 1000))):
                book = self._taken(c.take(force=True))
                if book is not None:
                    return book
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(wait)
                await self._ask(c)
                continue
            c.on_answer(await self.sock.recv_multipart(), time.time_ns())

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> MergedBook:
        if self.closed:
            raise StopAsyncIteration
        return await self.recv()

    def close(self) -> None:
        """Close the socket (idempotent); iteration stops."""
        if not self.closed:
            self.closed = True
            self.sock.close(0)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()


def subscribe(endpoint: str | Sequence[str], symbols: str | Iterable[str] | None = None, *,
              timeout: float | None = None, curve: CurveKeys | None = None, ctx: zmq.Context | None = None,
              hwm: int = RCVHWM, latest_only: bool = False) -> Subscription:
    """Subscribe to the merged books of ``symbols`` (one ``"BTC/USDT"``, several, or None/empty
    for every symbol) on the publisher at ``endpoint`` (or several endpoints). Returns a
    :class:`Subscription`: iterate it for :class:`~common.schema.MergedBook` values; close it (or
    use ``with``) when done. ``ValueError`` for a malformed symbol or a negative timeout.

    ``latest_only=True``: ``endpoint`` is the publisher's latest endpoint (``latest_port``, one
    endpoint) and every read returns the newest book of a symbol (see the module docstring);
    ``hwm`` does not apply. :class:`SubscriptionRefused` if the publisher refuses a request."""
    return Subscription(endpoint, symbols, timeout=timeout, curve=curve, ctx=ctx, hwm=hwm, latest_only=latest_only)


def asubscribe(endpoint: str | Sequence[str], symbols: str | Iterable[str] | None = None, *,
               timeout: float | None = None, curve: CurveKeys | None = None, ctx: zmq.Context | None = None,
               hwm: int = RCVHWM, latest_only: bool = False) -> AsyncSubscription:
    """:func:`subscribe` for asyncio: ``async for book in asubscribe(endpoint, "BTC/USDT")``."""
    return AsyncSubscription(endpoint, symbols, timeout=timeout, curve=curve, ctx=ctx, hwm=hwm,
                             latest_only=latest_only)


# --- depletion queries ----------------------------------------------------------------------------


def _size_text(size: Decimal | str | int) -> str | Decimal:
    if isinstance(size, bool) or not isinstance(size, (Decimal, str, int)):
        raise TypeError(f"size must be a Decimal, a decimal string or an int (floats are inexact), "
                        f"got {type(size).__name__}")
    return str(size) if isinstance(size, int) else size


def deplete(endpoint: str | Mapping[str, str], symbol: str, side: str, size: Decimal | str | int, *,
            notional: bool = False, venue: str | None = None, all_venues: bool = False, timeout: float = 3.0,
            curve: CurveKeys | None = None, ctx: zmq.Context | None = None) -> Reply:
    """Ask the aggregator's query endpoint what a market order would cost now.

    ``endpoint``: the aggregator's query endpoint, or, when ``[[aggregator.shards]]`` split the
    symbols over several aggregators, symbol -> the query endpoint of the shard that owns it
    (``config.load(path).aggregator.query_routes()``): the request goes to the owner of ``symbol``
    (:class:`common.query.NoRoute`, a QueryError, when no shard carries it).

    ``side`` ``"buy"`` (takes asks) or ``"sell"`` (takes bids); ``size`` in base units, or in
    quote units with ``notional=True``; by default the merged book only, ``venue=`` one venue's
    full book instead, ``all_venues=True`` the merged book plus every venue's. Returns the
    decoded :class:`common.query.Reply` (``merged``/``venues`` maps of decimal text, as in
    docs/depletion.md; ``epoch``/``seq`` name the snapshot it agrees with).

    Raises :class:`common.query.QueryError` for a malformed request (before sending) or reply,
    :class:`QueryRefused` when the aggregator answers with an error (unknown symbol, ...), and
    :class:`QueryTimeout` when nothing answers within ``timeout`` seconds.
    """
    amount = _size_text(size)
    endpoint = endpoint_for(endpoint, symbol)
    request = encode_request(symbol.upper(), side.lower(), venue=venue.lower() if venue else None,
                             all_venues=all_venues,
                             **({"notional": amount} if notional else {"quantity": amount}))
    sock = (ctx or zmq.Context.instance()).socket(zmq.REQ)
    try:
        ms = max(1, int(timeout * 1000))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, ms)
        sock.setsockopt(zmq.SNDTIMEO, ms)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        try:
            sock.send(request)
            raw = sock.recv()
        except zmq.Again:
            raise QueryTimeout(f"no answer from the aggregator at {endpoint} within {timeout:g} s "
                               f"(is it running?)") from None
    finally:
        sock.close(0)
    reply = decode_reply(raw)
    if not reply.ok:
        raise QueryRefused(str(reply.error))
    return reply

