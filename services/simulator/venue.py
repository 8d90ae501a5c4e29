"""What every simulated venue shares: one port serving REST (plain HTTP GET answered during the
WebSocket opening handshake) and WebSocket, connection bookkeeping, per-connection ordered
output, our own pings, faults and counters. The venue modules (``binance.py``, ``bitstamp.py``)
add the wire protocol; ``replay.py`` swaps the source of data.

Sending: every frame for a connection goes through that connection's :class:`Conn` queue and one
writer task, so replies and events keep their order, a slow client never blocks the market
ticker, and ``/pause`` can wait until every queued frame has left (:meth:`VenueServer.drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from services.simulator.market import Market, SymbolSpec

log = logging.getLogger("simulator")


class HttpError(Exception):
    """Answer the current REST request with ``status`` and a JSON ``body``."""

    def __init__(self, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = list(headers)


def http_response(status: int, body: Any, headers: Iterable[tuple[str, str]] = (),
                  content_type: str = "application/json;charset=UTF-8") -> Response:
    """A complete HTTP response; ``body`` is bytes/str (sent as is) or JSON-able."""
    if isinstance(body, bytes | bytearray):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body, separators=(",", ":")).encode()
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    hdrs = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                    ("Content-Length", str(len(data))), ("Content-Type", content_type)])
    for k, v in headers:
        hdrs[k] = v
    return Response(status, reason, hdrs, data)


def dumps(obj: Any) -> str:
    """Compact JSON as the venues send it."""
    return json.dumps(obj, separators=(",", ":"))


@dataclass
class RestFault:
    count: int
    status: int
    retry_after: str | None = None


class Conn:
    """One WebSocket client: its subscriptions and an ordered output queue with one writer."""

    def __init__(self, venue: VenueServer, ws: ServerConnection, path: str, query: dict[str, list[str]]):
        self.venue = venue
        self.ws = ws
        self.path = path
        self.query = query
        self.subs: set[str] = set()          # venue-specific subscription keys (stream / channel)
        self.symbols: set[str] = set()       # canonical symbols whose book events this conn wants
        self._out: deque[str] = deque()
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.closed = False
        self.state: dict[str, Any] = {}      # venue-specific per-connection data
        self.silent_until = 0.0              # a silence fault stalls this connection only

    def silenced(self) -> bool:
        return time.monotonic() < self.silent_until

    def push(self, frame: str) -> None:
        """Queue a frame; dropped while this connection is silenced (nothing at all is sent then)."""
        if self.closed:
            return
        if self.silenced():
            self.venue.stats["frames_unsent_silence"] += 1
            return
        self._out.append(frame)
        self.idle.clear()
        self._wake.set()

    def discard_pending(self) -> None:
        self._out.clear()
        self.idle.set()

    async def writer(self) -> None:
        st = self.venue.stats
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    if self.silenced():
                        self._out.clear()
                        break
                    frame = self._out.popleft()
                    await self.ws.send(frame)
                    st["frames_sent"] += 1
                self.idle.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._out.clear()
            self.idle.set()

    async def pinger(self, interval: float, pong_timeout: float) -> None:
        """Our own keep-alive (the library's is off so that a silence fault can stop it)."""
        try:
            while True:
                await asyncio.sleep(interval)
                if self.silenced():
                    continue
                pong = await self.ws.ping()
                self.venue.stats["pings_sent"] += 1
                try:
                    await asyncio.wait_for(pong, pong_timeout)
                except TimeoutError:
                    log.info("%s: no pong within %.0f s, closing", self.venue.id, pong_timeout)
                    await self.ws.close(1011, "keepalive ping timeout")
                    return
        except ConnectionClosed:
            pass


Handler = Callable[[ServerConnection, Request, str, dict[str, list[str]]], Awaitable[Response]]


class VenueServer:
    """Base of a simulated venue. Subclasses set ``kind`` and implement :meth:`route_rest`,
    :meth:`is_ws_path`, :meth:`on_open` and :meth:`on_message`, plus the book event encoding."""

    kind = ""

    def __init__(self, venue_id: str, *, host: str, port: int, specs: dict[str, SymbolSpec],
                 ping_interval: float = 20.0, pong_timeout: float = 60.0) -> None:
        self.id = venue_id
        self.host = host
        self.port = port
        self.specs = specs                        # canonical symbol -> spec (what the venue lists)
        self.markets: dict[str, Market] = {}      # live mode: canonical symbol -> true book
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.conns: set[Conn] = set()
        self.stats: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.unlisted: set[str] = set()
        self.pending_gaps: dict[str, int] = {}     # symbol -> events to lose before the next one
        self.silent_until = 0.0
        self.muted: dict[str, float] = {}          # symbol -> when its silence_symbol fault ends (monotonic)
        self.rest_error: RestFault | None = None
        self.rate_limit: RestFault | None = None
        self.lag: tuple[int, float] | None = None  # (count, seconds)
        self.paused = False                        # set by the simulator (no book events)
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(self._handler, self.host, self.port,
                                   process_request=self._process_request,
                                   ping_interval=None, max_size=2**20, max_queue=64)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # --- faults --------------------------------------------------------------------------------

    def silence(self, seconds: float) -> None:
        """Stall the connections open now for ``seconds``: nothing at all is sent on them (no
        events, no replies, no pings) and, by not reading, no pongs either. Book changes go on in
        truth; connections opened meanwhile are served normally."""
        until = time.monotonic() + seconds
        self.silent_until = max(self.silent_until, until)
        paused = []
        for c in self.conns:
            c.silent_until = max(c.silent_until, until)
            c.discard_pending()
            with contextlib.suppress(Exception):
                c.ws.transport.pause_reading()
                paused.append(c)

        async def _end() -> None:
            await asyncio.sleep(max(0.0, self.silent_until - time.monotonic()))
            for c in paused:
                with contextlib.suppress(Exception):
                    c.ws.transport.resume_reading()
        self.spawn(_end())

    def silence_symbol(self, symbol: str, seconds: float) -> None:
        """Send no book event of ``symbol`` on any connection for ``seconds`` (a stream the venue
        stopped feeding while the connections and every other symbol go on). The truth keeps
        changing; REST snapshots and (re)subscriptions are answered as usual, with the current
        truth, so a feed can resync. Then the events resume."""
        self.muted[symbol] = max(self.muted.get(symbol, 0.0), time.monotonic() + seconds)

    def symbol_muted(self, symbol: str, now: float) -> bool:
        """``symbol`` is under a ``silence_symbol`` fault at ``now``."""
        until = self.muted.get(symbol)
        if until is None:
            return False
        if now < until:
            return True
        del self.muted[symbol]
        log.info("%s %s: symbol silence over", self.id, symbol)
        return False

    def emit_muted(self, symbol: str, now: float) -> None:
        """The next event of a silenced ``symbol``: applied to the truth, sent nowhere. By
        default a hidden event: ids it consumes show as a jump when the symbol speaks again (as on
        a real venue). A venue whose hidden events mark the whole connection (Coinbase's
        ``sequence_num``) overrides this: a silenced symbol must not disturb the others."""
        self.emit(symbol, now, hidden=True)
        self.stats["events_muted"] += 1

    def drop(self) -> int:
        """Close every WebSocket connection abruptly (no close frame)."""
        n = 0
        for c in list(self.conns):
            c.closed = True
            c.discard_pending()
            c.ws.transport.abort()
            n += 1
        return n

    def shutdown_frame(self, conn: Conn) -> str | None:
        """The venue's shutdown notice for ``conn``; None: the venue documents none (Kraken,
        Coinbase, Gemini) and simply closes."""
        return None

    def shutdown(self, delay: float = 0.5) -> int:
        """Announce a shutdown on every connection (when the venue has a notice), close them
        (1001) ``delay`` s later."""
        conns = list(self.conns)
        for c in conns:
            notice = self.shutdown_frame(c)
            if notice is not None:
                c.push(notice)

        async def _close() -> None:
            await asyncio.sleep(delay)
            for c in conns:
                with contextlib.suppress(Exception):
                    await c.ws.close(1001, "server shutdown")
        self.spawn(_close())
        return len(conns)

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        """The ``i``-th malformed frame of ``kind`` (0 invalid JSON, 1 wrong field types,
        2 negative amount, 3 NaN amount) for ``conn``, or None if it subscribed to nothing."""
        raise NotImplementedError

    def inject_malformed(self, count: int) -> int:
        """Send ``count`` malformed frames on every connection's book stream. Every fifth one is
        a *valid* event with unknown extra fields (live mode, not paused): it is applied to the
        truth, so a feed must accept it (venues add fields without notice)."""
        sent = 0
        for i in range(count):
            kind = i % 5
            if kind == 4:
                if self.markets and not self.paused:
                    sym = sorted(self.markets)[i % len(self.markets)]
                    self.emit(sym, time.monotonic(), extra=True)
                    sent += 1
                    continue
                kind = i % 4
            for c in list(self.conns):
                frame = self.malformed_for(c, kind, i)
                if frame is not None:
                    c.push(frame)
                    sent += 1
        self.stats["malformed_sent"] += sent
        return sent

    def take_rest_fault(self, snapshot: bool) -> Response | None:
        """Consume a pending rate-limit (any REST call) or error (snapshots only) fault."""
        rl = self.rate_limit
        if rl is not None and rl.count > 0:
            rl.count -= 1
            if rl.count == 0:
                self.rate_limit = None
            self.stats["rest_rate_limited"] += 1
            return self.rate_limit_response(rl)
        re_ = self.rest_error
        if snapshot and re_ is not None and re_.count > 0:
            re_.count -= 1
            if re_.count == 0:
                self.rest_error = None
            self.stats["rest_errors"] += 1
            return self.error_response(re_.status)
        return None

    def take_lag(self) -> float:
        if self.lag is None:
            return 0.0
        count, seconds = self.lag
        self.lag = (count - 1, seconds) if count > 1 else None
        return seconds

    def rate_limit_response(self, f: RestFault) -> Response:
        return http_response(f.status, {"error": "rate limited"}, [("Retry-After", f.retry_after or "1")])

    def error_response(self, status: int) -> Response:
        return http_response(status, {"error": "internal error"})

    # --- HTTP / WebSocket plumbing ---------------------------------------------------------------

    def is_ws_path(self, path: str) -> bool:
        raise NotImplementedError

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        raise NotImplementedError

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path, query = url.path, parse_qs(url.query, keep_blank_values=True)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade:
            if self.is_ws_path(path):
                return None
            return http_response(404, {"error": f"no WebSocket endpoint at {path}"})
        self.stats["rest_requests"] += 1
        try:
            return await self.route_rest(path, query)
        except HttpError as e:
            return http_response(e.status, e.body, e.headers)

    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        conn = Conn(self, ws, url.path, parse_qs(url.query))
        self.conns.add(conn)
        self.stats["connections_total"] += 1
        writer = asyncio.ensure_future(conn.writer())
        pinger = asyncio.ensure_future(conn.pinger(self.ping_interval, self.pong_timeout))
        try:
            await self.on_open(conn)
            async for msg in ws:
                self.stats["frames_received"] += 1
                if conn.silenced():
                    continue
                await self.on_message(conn, msg if isinstance(msg, str) else msg.decode("utf-8", "replace"))
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self.conns.discard(conn)
            await self.on_close(conn)
            writer.cancel()
            pinger.cancel()

    async def on_open(self, conn: Conn) -> None:
        """Called once the WebSocket is open (URL subscriptions are parsed here)."""

    async def on_message(self, conn: Conn, text: str) -> None:
        raise NotImplementedError

    async def on_close(self, conn: Conn) -> None:
        """Called when the connection is gone."""

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait until every queued frame has been handed to the socket; a connection that cannot
        take its frames within ``timeout`` is aborted, so nothing queued can leave later."""
        conns = [c for c in self.conns if not c.idle.is_set()]
        if not conns:
            return
        waits = {c: asyncio.ensure_future(c.idle.wait()) for c in conns}
        _, pending = await asyncio.wait(waits.values(), timeout=timeout)
        for c, w in waits.items():
            if w in pending:
                w.cancel()
                log.warning("%s: connection did not drain in %.1f s, aborting it", self.id, timeout)
                c.discard_pending()
                c.ws.transport.abort()

    # --- book events (live mode) -----------------------------------------------------------------

    def emit(self, symbol: str, now: float, *, burst: bool = False, hidden: bool = False,
             extra: bool = False) -> None:
        """Draw the next event of ``symbol``, apply it to the truth and queue it for every
        connection subscribed to ``symbol`` (unless ``hidden`` or silenced: then it is lost).
        ``extra`` adds unknown fields to the (otherwise valid) event."""
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        return {"kind": self.kind, "port": self.port, "mode": "live", "connections": len(self.conns)}

    def book_levels(self, symbol: str) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
        """The complete true book, best first."""
        m = self.markets[symbol]
        return m.book.sorted_bids(), m.book.sorted_asks()
