"""Where the live view's books come from: one subscription in a background thread.

The thread owns its ZeroMQ socket and puts ``("book", generation, book, missed)`` on the view's
queue; :meth:`Source.switch` changes the symbol (a new generation, so books of the old symbol
still in the queue are recognised and dropped). The view never touches a socket.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import zmq

from common import bus, schema, security
from common.numbers import parse_decimal
from common.schema import BusError

# Timeouts
POLL_S = 0.25   # the thread notices a switch or close within this (it blocks in poll meanwhile)


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    amount: Decimal
    venue: str


@dataclass(frozen=True, slots=True)
class Book:
    """A merged book as the view reads it (prices and amounts exact)."""

    symbol: str
    epoch: int
    seq: int
    ts: int
    spread: Decimal | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    statuses: dict[str, str]
    depletion: dict[str, Any] | None = None
    venue_ts: dict[str, dict[str, int]] = field(default_factory=dict)


def book_from_wire(m: Any) -> Book:
    """A decoded subscriber message -> :class:`Book`; ``ValueError``/``KeyError``/``TypeError``
    on a malformed one."""
    if not isinstance(m, dict):
        raise TypeError(f"snapshot is a {type(m).__name__}, not a map")

    def levels(key: str) -> tuple[Level, ...]:
        return tuple(Level(parse_decimal(p), parse_decimal(a), str(v)) for p, a, v in m[key])

    spread = m["spread"]
    vts = m.get("venue_ts")
    return Book(symbol=str(m["symbol"]), epoch=int(m["epoch"]), seq=int(m["seq"]), ts=int(m.get("ts") or 0),
                spread=None if spread is None else Decimal(spread), bids=levels("bids"), asks=levels("asks"),
                statuses=dict(m["venues"]), depletion=m.get("depletion") if isinstance(m.get("depletion"), dict)
                else None, venue_ts=vts if isinstance(vts, dict) else {})


class Source:
    """Subscribes to one symbol at a time in a daemon thread; results go to ``out``.

    Messages put on ``out``: ``("book", generation, Book, missed)`` (``missed`` None: the view
    counts ``seq`` gaps itself) and ``("drop", generation, reason)`` for a malformed snapshot.
    """

    def __init__(self, endpoint: str, out: queue.Queue[tuple[Any, ...]], *, server_key: str | None = None,
                 client_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.out = out
        self.server_key, self.client_key = server_key, client_key
        self._want: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Open the socket (errors such as bad CURVE keys raise here) and start the thread."""
        s = bus.context().socket(zmq.SUB)
        s.setsockopt(zmq.MAXMSGSIZE, 16 << 20)
        s.setsockopt(zmq.LINGER, 0)
        if self.server_key and self.client_key:
            try:
                security.client_keys(s, server_key=self.server_key, client_key=self.client_key)
            except Exception:
                s.close(0)
                raise
        s.connect(self.endpoint)
        self._thread = threading.Thread(target=self._run, args=(s,), name="watch-source", daemon=True)
        self._thread.start()

    def switch(self, symbol: str) -> int:
        """Subscribe to ``symbol`` instead; returns the new generation number."""
        with self._lock:
            gen = (self._want[1] + 1) if self._want else 1
            self._want = (symbol, gen)
        return gen

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * POLL_S + 1)

    def _run(self, s: zmq.Socket) -> None:
        topic: bytes | None = None
        gen = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    want = self._want
                if want is not None and want[1] != gen:
                    if topic is not None:
                        s.setsockopt(zmq.UNSUBSCRIBE, topic)
                    topic, gen = schema.book_topic(want[0]), want[1]
                    s.setsockopt(zmq.SUBSCRIBE, topic)
                if not s.poll(int(POLL_S * 1000)):
                    continue
                frames = s.recv_multipart(zmq.NOBLOCK)
                if frames[0] != topic:   # ZeroMQ matches prefixes: compare the topic exactly
                    continue
                try:
                    if len(frames) != 2:
                        raise ValueError(f"{len(frames)} frames, expected 2")
                    book = book_from_wire(schema.unpack(frames[1]))
                except (BusError, KeyError, TypeError, ValueError, ArithmeticError) as e:
                    self.out.put(("drop", gen, f"malformed snapshot: {e}"))
                    continue
                self.out.put(("book", gen, book, None))
        finally:
            s.close(0)
