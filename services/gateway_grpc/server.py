"""The gRPC gateway: one asyncio process serving two services on one port.

* ``orderbook.OrderbookAggregator/BookSummary`` (protos/orderbook.proto, the original challenge's
  interface, unchanged): the merged book of ``gateway_grpc.symbol``, top ``gateway_grpc.levels``
  per side, prices and amounts as doubles.
* ``bookmux.Books/Subscribe`` and ``Info`` (protos/bookmux.proto): any configured symbol per call,
  exact decimal text, venue statuses, ``epoch``/``seq``, depletion summary.

Books come from the publisher (the client library's subscription to every configured symbol, see
:mod:`services.gateway_grpc.source`) into a :class:`~services.gateway_grpc.hub.Hub`; every stream
is one coroutine that waits on its own one-slot mailbox (newest book wins) and writes one message
at a time, so a client that reads slowly or not at all holds one pending book and its HTTP/2
flow-control window, and never delays the reader or another client. Each message is encoded once
per (book, depth) and shared by every stream of that symbol and depth (pre-serialized bytes). A
stream whose client cancels or disconnects is cancelled by gRPC; its ``finally`` removes its
mailbox. gRPC keepalive pings find dead peers that never closed their connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from common.config import SYMBOL_RE, Config
from common.security import Security
from services.gateway_grpc import convert, source, stubs
from services.gateway_grpc.hub import Hub, Mailbox

log = logging.getLogger("gateway_grpc")

SUMMARY_METHOD = "/orderbook.OrderbookAggregator/BookSummary"
SUBSCRIBE_METHOD = "/bookmux.Books/Subscribe"

SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),          # ping every client connection every 30 s ...
    ("grpc.keepalive_timeout_ms", 10_000),       # ... and drop it when the ping is not answered
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 1 << 16),   # requests are tiny
    ("grpc.so_reuseport", 0),                    # a second gateway on the same port is an error
]


def publisher_endpoint(cfg: Config) -> str:
    """Where the publisher is reached from this host: its bind address, loopback for a wildcard."""
    host = cfg.publisher.bind
    if host in ("0.0.0.0", "*", "::", ""):
        host = "127.0.0.1"
    return f"tcp://{host}:{cfg.publisher.port}"


@dataclass(eq=False)
class Stream:
    """One open stream: what it serves, to whom, and how it is keeping up."""

    method: str
    symbol: str
    levels: int
    peer: str
    box: Mailbox
    sent: int = 0


class Gateway:
    """The two servicers over one :class:`Hub`; :meth:`run` reads books until :meth:`stop`."""

    def __init__(self, cfg: Config, *, endpoint: str | None = None, orderbook: stubs.Stubs | None = None) -> None:
        """``endpoint``: the publisher (default from config). ``orderbook``: the challenge's
        generated modules to serve with, default generated from protos/orderbook.proto; an
        embedding process that already loaded its own (protobuf allows one definition of package
        ``orderbook`` per process) passes those."""
        self.cfg = cfg
        self.gw = cfg.gateway_grpc
        self.endpoint = endpoint or publisher_endpoint(cfg)
        self.symbols = list(cfg.all_symbols)
        self.ob = orderbook or stubs.load("orderbook")
        self.bm = stubs.load("bookmux")
        self.hub = Hub()
        self.counters: dict[str, int] = {}
        self.open: set[Stream] = set()
        self._stopping: asyncio.Event | None = None

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    # --- streams ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _stream(self, context: grpc.aio.ServicerContext, method: str, symbol: str,
                      levels: int) -> AsyncIterator[Stream]:
        if len(self.open) >= self.gw.max_clients:
            self._count("refused_full")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"gateway_grpc.max_clients ({self.gw.max_clients}) streams are open")
        st = Stream(method, symbol, levels, context.peer(), self.hub.join(symbol))
        self.open.add(st)
        self._count("streams_opened")
        try:
            yield st
        finally:
            self.hub.leave(symbol, st.box)
            self.open.discard(st)
            self._count("streams_closed")
            self._count("skipped_for_slow_clients", st.box.skipped)
            log.debug("%s %s stream of %s ended: %d sent, %d skipped", method, symbol, st.peer, st.sent, st.box.skipped)

    async def _pump(self, context: grpc.aio.ServicerContext, st: Stream, key: Any,
                    encode: Callable[[Any], bytes]) -> None:
        """Write the newest book of the stream's symbol whenever there is one, forever."""
        ch = self.hub.channel(st.symbol)
        while True:
            book = await st.box.get()
            data = ch.encoded(book, key, encode)
            try:
                await context.write(data)
            except asyncio.CancelledError:
                raise
            except Exception as e:   # the peer went away mid-write (gRPC raises its internal ExecuteBatchError)
                self._count("writes_to_a_gone_peer")
                log.debug("%s stream of %s: write failed (%s: %s); closing it", st.symbol, st.peer,
                          type(e).__name__, e)
                return
            st.sent += 1

    async def book_summary(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        """``OrderbookAggregator.BookSummary``: Summary messages of the configured symbol, forever."""
        symbol, levels = self.gw.symbol, self.gw.levels

        def encode(book: Any) -> bytes:
            data: bytes = convert.summary(self.ob.messages, book, levels).SerializeToString()
            return data

        async with self._stream(context, SUMMARY_METHOD, symbol, levels) as st:
            await self._pump(context, st, ("summary", levels), encode)

    async def subscribe(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        """``Books.Subscribe``: exact books of the requested symbol, forever."""
        symbol = request.symbol.strip().upper()
        if not SYMBOL_RE.match(symbol):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"symbol {request.symbol!r} is not of the form BASE/QUOTE (e.g. BTC/USDT)")
        if symbol not in self.symbols:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"symbol {symbol} is not carried here; carried: {', '.join(self.symbols)}")
        levels = request.levels

        def encode(book: Any) -> bytes:
            data: bytes = convert.exact_book(self.bm.messages, book, levels).SerializeToString()
            return data

        async with self._stream(context, SUBSCRIBE_METHOD, symbol, levels) as st:
            await self._pump(context, st, ("exact", levels), encode)

    async def info(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """``Books.Info``: what is served and how many streams are open."""
        pb = self.bm.messages
        return pb.GatewayInfo(
            symbol=self.gw.symbol, levels=self.gw.levels, symbols=self.symbols, clients=len(self.open),
            clients_by_symbol=self.hub.clients(), snapshots=self.hub.published, max_clients=self.gw.max_clients,
            malformed=self.counters.get("malformed", 0),
            streams=[pb.StreamInfo(method=st.method, symbol=st.symbol, levels=st.levels, peer=st.peer, sent=st.sent,
                                   skipped=st.box.skipped) for st in self.open])

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """Both services' method handlers; stream responses are pre-serialized bytes (shared by
        every stream of a symbol), hence no response serializer on the streams."""
        ob, bm = self.ob.messages, self.bm.messages
        ob_name = ob.DESCRIPTOR.services_by_name["OrderbookAggregator"].full_name
        bm_name = bm.DESCRIPTOR.services_by_name["Books"].full_name
        return [
            grpc.method_handlers_generic_handler(ob_name, {
                "BookSummary": grpc.unary_stream_rpc_method_handler(
                    self.book_summary, request_deserializer=ob.Empty.FromString)}),
            grpc.method_handlers_generic_handler(bm_name, {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self.subscribe, request_deserializer=bm.SubscribeRequest.FromString),
                "Info": grpc.unary_unary_rpc_method_handler(
                    self.info, request_deserializer=bm.InfoRequest.FromString,
                    response_serializer=bm.GatewayInfo.SerializeToString)}),
        ]

    # --- input and lifecycle ------------------------------------------------------------------

    async def read(self, sec: Security | None) -> None:
        """Publisher -> hub, until cancelled."""
        async for book in source.books(self.endpoint, self.symbols, sec=sec, counters=self.counters):
            self.hub.publish(book.symbol, book)

    async def _log_counters(self, every: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every)
            log.info("streams %d %s; books %d; counters %s", len(self.open), self.hub.clients(), self.hub.published,
                     " ".join(f"{k}={v}" for k, v in sorted(self.counters.items())))

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def run(self, *, on_ready: Callable[[int], None] | None = None) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`). Returns an exit status: 1 when the port
        cannot be bound or reading the publisher failed, else 0."""
        self._stopping = asyncio.Event()
        sec = Security.from_config(self.cfg)
        server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=self.gw.max_clients + 16)
        server.add_generic_rpc_handlers(self.handlers())
        err: Exception | None = None
        try:
            port = server.add_insecure_port(self.gw.address)
        except RuntimeError as e:
            port, err = 0, e
        if not port:
            log.error("cannot bind %s: %s", self.gw.address, err or "address in use?")
            return 1
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        failed: list[BaseException] = []

        def reader_done(t: asyncio.Task[None]) -> None:
            # The reader only ends when cancelled; anything else must not leave a server that
            # serves a frozen book: exit non-zero (supervisord restarts the program).
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                failed.append(exc)
                log.error("reading books from %s failed: %r; stopping", self.endpoint, exc)
                self.stop()

        reader = asyncio.create_task(self.read(sec))
        reader.add_done_callback(reader_done)
        tasks = [reader, asyncio.create_task(self._log_counters())]
        log.info("serving gRPC on %s: OrderbookAggregator.BookSummary (%s, %d levels) and bookmux.Books (%s); "
                 "books from %s; at most %d streams", self.gw.address, self.gw.symbol, self.gw.levels,
                 ", ".join(self.symbols), self.endpoint, self.gw.max_clients)
        if on_ready is not None:
            on_ready(port)
        t0 = time.monotonic()
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.stop(grace=1.0)
            if sec is not None:
                sec.close()
        log.info("stopped after %.0f s; counters %s", time.monotonic() - t0, self.counters)
        return 1 if failed else 0
