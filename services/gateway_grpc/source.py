"""The gateway's input: merged books from the publisher, as a ZeroMQ subscriber of the README's
subscriber contract (the gateway is one more subscriber; it imports only ``common``).

A minimal private reader until the client library (``common/subscriber.py``) is there: one SUB
socket subscribed to every configured symbol, the topic frame compared exactly, each payload
decoded into a :class:`Book` with exact ``Decimal`` prices. A malformed message is counted and
dropped. Subscribing to every configured symbol up front means a new gRPC client of any symbol
gets the current book from memory at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import zmq
import zmq.asyncio

from common import schema
from common.numbers import BadNumber, parse_decimal
from common.schema import BusError
from common.security import Security

log = logging.getLogger("gateway_grpc")


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    amount: Decimal
    venue: str


@dataclass(frozen=True, slots=True)
class Book:
    """One merged snapshot of the subscriber contract, prices and amounts exact."""

    symbol: str
    epoch: int
    seq: int
    ts: int
    spread: Decimal | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    venues: Mapping[str, str]
    depletion: Mapping[str, Any] | None = None
    venue_ts: Mapping[str, Any] | None = field(default=None)


def _levels(raw: Any, key: str) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise BusError(f"{key!r} is not a list")
    out = []
    for lvl in raw:
        if not isinstance(lvl, list) or len(lvl) != 3 or not isinstance(lvl[2], str):
            raise BusError(f"{key!r} level is not [price, amount, venue]: {lvl!r}"[:120])
        out.append(Level(parse_decimal(lvl[0]), parse_decimal(lvl[1]), lvl[2]))
    return tuple(out)


def _spread(v: Any) -> Decimal | None:
    """The spread is signed (negative when venues cross): the magnitude of a price, either sign."""
    if v is None:
        return None
    if isinstance(v, str) and v.startswith("-"):
        return -parse_decimal(v[1:])
    return parse_decimal(v)


def decode(topic: bytes, payload: bytes) -> Book:
    """One subscriber message -> :class:`Book`; :class:`BusError` when anything is off."""
    m = schema.unpack(payload)
    if not isinstance(m, dict):
        raise BusError("payload is not a map")
    try:
        symbol, epoch, seq, ts = m["symbol"], m["epoch"], m["seq"], m["ts"]
        if not isinstance(symbol, str) or schema.book_topic(symbol) != topic:
            raise BusError(f"topic {topic[:60]!r} does not match symbol {symbol!r}"[:160])
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (epoch, seq, ts)):
            raise BusError("epoch/seq/ts are not ints")
        venues = m["venues"]
        if not isinstance(venues, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in venues.items()):
            raise BusError("'venues' is not a map of venue -> status")
        spread = m["spread"]
        depl, vts = m.get("depletion"), m.get("venue_ts")
        return Book(symbol, epoch, seq, ts, _spread(spread),
                    _levels(m["bids"], "bids"), _levels(m["asks"], "asks"), venues,
                    depl if isinstance(depl, dict) else None, vts if isinstance(vts, dict) else None)
    except KeyError as e:
        raise BusError(f"missing key {e}") from None
    except (BadNumber, UnicodeError) as e:
        raise BusError(str(e)) from None


async def books(endpoint: str, symbols: list[str], *, sec: Security | None = None,
                max_msg_size: int = 16 << 20, counters: dict[str, int] | None = None) -> AsyncIterator[Book]:
    """Every snapshot of ``symbols`` published on ``endpoint``, decoded, as they arrive (never
    ends; cancel the consumer to stop). Malformed messages count as ``counters["malformed"]``."""
    counters = counters if counters is not None else {}
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg_size)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    topics = {schema.book_topic(s) for s in symbols}
    for t in sorted(topics):
        sock.setsockopt(zmq.SUBSCRIBE, t)
    if sec is not None:
        sec.client(sock)
    sock.connect(endpoint)
    try:
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 2 or frames[0] not in topics:   # prefix matching: compare exactly
                counters["ignored"] = counters.get("ignored", 0) + 1
                continue
            try:
                yield decode(frames[0], frames[1])
            except BusError as e:
                counters["malformed"] = counters.get("malformed", 0) + 1
                log.warning("dropped a malformed snapshot: %s", e)
    finally:
        sock.close(0)
