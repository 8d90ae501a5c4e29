"""Every message on the bookmux bus, its frame layout, and msgpack encode/decode in one place.

Numbers: prices and quantities are exact ``Decimal`` in process and decimal *text* on the wire
(see :mod:`common.numbers`). Times are integer nanoseconds since the Unix epoch.

Feed bus (each feed process PUB-binds; the aggregator SUB-connects to every feed)
---------------------------------------------------------------------------------
Every message is two frames::

    frame 0  topic    ASCII  "md.<venue>.<SYMBOL>"   e.g. b"md.binance.BTC/USDT"
                             "hb.<venue>"            for the feed heartbeat
    frame 1  payload  msgpack map, keys below

    key   type        in            meaning
    ver   int         all           schema version (SCHEMA_VERSION); unknown versions are dropped
    t     str         all           "snap" | "delta" | "status" | "hb"
    v     str         all           venue id, lowercase ("binance", "binance_us", "bitstamp")
    sess  int         all           feed session: changes when the feed process restarts
    s     str         snap/delta/status   canonical symbol "BASE/QUOTE"
    seq   int         snap/delta/status   per (venue, symbol) stream: +1 per message, from 1
    ets   int         snap/delta    exchange timestamp (ns), 0 when the venue gives none
    rts   int         all           receive timestamp (ns): when the feed read the frame that made it
    b, a  [[p, q]]    snap/delta    bids / asks as [price text, quantity text]; in a delta q is the
                                    new absolute size and "0" removes the level
    st    str         status        "live" | "syncing" | "stale" | "down"
    why   str         status        human-readable reason
    seqs  {s: int}    hb            last seq published per symbol (lets a receiver see a lost tail)
    x     [p|"", p|""] snap/delta   optional: per side (bids, asks) the deepest price down to which
                                    the venue book is known exactly ("" = the whole side); on a snap
                                    when the venue caps its depth, on a delta when it changed
    mode  str         hb            optional: the venue's trading mode when it reports one
                                    ("online", "cancel_only", "post_only", "maintenance", ...)

A ``snap`` replaces the venue book of that symbol and means the stream is synced (``live``); a
``status`` other than ``live`` means the receiver must drop that venue's levels for the symbol
until the next ``snap``. Seq numbers count snaps, deltas and statuses alike, so any lost message of
a stream shows as a jump.

Feed control (each feed ROUTER-binds; receivers DEALER-connect)
---------------------------------------------------------------
Request, one frame: msgpack map ``{"t": "snapreq", "s": [symbols]}`` (an empty list = all).
Reply: one frame per requested symbol, each a feed payload as above: a ``snap`` (with the stream's
current ``seq``) when the symbol is synced, else its current ``status``. The receiver drops stream
messages with ``seq`` at or below the reply's (the ZeroMQ Guide's clone pattern).

Merged book (aggregator PUB -> publisher SUB, and publisher -> subscribers)
---------------------------------------------------------------------------
Two frames: topic ``book.<BASE>/<QUOTE>`` and a msgpack map, the subscriber contract of the README:
``symbol, epoch, seq, ts, spread, bids, asks, venues`` (+ ``depletion`` where configured), levels
as ``[price, amount, venue]`` in canonical text (:func:`common.numbers.fmt`). The publisher
forwards the aggregator's payload bytes unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgpack

from common.numbers import BadNumber, parse_decimal

SCHEMA_VERSION = 1

# Message types on the feed bus.
SNAP = "snap"
DELTA = "delta"
STATUS = "status"
HEARTBEAT = "hb"

# Venue statuses, as subscribers see them.
LIVE = "live"
SYNCING = "syncing"
STALE = "stale"
DOWN = "down"
STATUSES = frozenset((LIVE, SYNCING, STALE, DOWN))

Levels = list[tuple[Decimal, Decimal]]


class BusError(ValueError):
    """A bus frame that does not decode into a valid message (counted and dropped)."""


@dataclass(slots=True)
class BookMsg:
    """A venue book snapshot (``kind == SNAP``) or delta (``kind == DELTA``) for one symbol."""

    kind: str
    venue: str
    symbol: str
    sess: int
    seq: int
    ets: int
    rts: int
    bids: Levels = field(default_factory=list)
    asks: Levels = field(default_factory=list)
    #: (bids, asks) exact-to prices, None inside = the whole side; None = not sent (unchanged).
    exact: tuple[Decimal | None, Decimal | None] | None = None


@dataclass(slots=True)
class StatusMsg:
    """A change of a venue stream's status (``live`` is implied by a snap)."""

    venue: str
    symbol: str
    sess: int
    seq: int
    status: str
    reason: str
    rts: int


@dataclass(slots=True)
class HeartbeatMsg:
    """A feed process is alive; ``seqs`` holds the last seq it published per symbol."""

    venue: str
    sess: int
    rts: int
    seqs: dict[str, int]
    mode: str = ""


FeedMsg = BookMsg | StatusMsg | HeartbeatMsg


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    """msgpack bytes -> object, raising :class:`BusError` on anything malformed."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises a family of errors (ExtraData, FormatError, ...)
        raise BusError(f"bad msgpack: {e}") from None


def pack(obj: Any) -> bytes:
    """Object -> msgpack bytes (the one place the bus encodes)."""
    return _pack(obj)


# --- topics -----------------------------------------------------------------------------------


def feed_topic(venue: str, symbol: str) -> bytes:
    return f"md.{venue}.{symbol}".encode("ascii")


def heartbeat_topic(venue: str) -> bytes:
    return f"hb.{venue}".encode("ascii")


def book_topic(symbol: str) -> bytes:
    return f"book.{symbol}".encode("ascii")


# --- feed messages ----------------------------------------------------------------------------


def _levels_out(levels: Levels) -> list[list[str]]:
    return [[str(p), str(q)] for p, q in levels]


def feed_payload(msg: FeedMsg) -> dict[str, Any]:
    """The msgpack map of a feed message (before packing)."""
    if isinstance(msg, BookMsg):
        m = {
            "ver": SCHEMA_VERSION, "t": msg.kind, "v": msg.venue, "sess": msg.sess, "s": msg.symbol,
            "seq": msg.seq, "ets": msg.ets, "rts": msg.rts,
            "b": _levels_out(msg.bids), "a": _levels_out(msg.asks),
        }
        if msg.exact is not None:
            m["x"] = ["" if p is None else str(p) for p in msg.exact]
        return m
    if isinstance(msg, StatusMsg):
        return {
            "ver": SCHEMA_VERSION, "t": STATUS, "v": msg.venue, "sess": msg.sess, "s": msg.symbol,
            "seq": msg.seq, "st": msg.status, "why": msg.reason, "rts": msg.rts,
        }
    hb: dict[str, Any] = {"ver": SCHEMA_VERSION, "t": HEARTBEAT, "v": msg.venue, "sess": msg.sess,
                          "rts": msg.rts, "seqs": dict(msg.seqs)}
    if msg.mode:
        hb["mode"] = msg.mode
    return hb


def encode_feed(msg: FeedMsg) -> list[bytes]:
    """A feed message -> its two frames ``[topic, payload]``."""
    topic = heartbeat_topic(msg.venue) if isinstance(msg, HeartbeatMsg) else feed_topic(msg.venue, msg.symbol)
    return [topic, _pack(feed_payload(msg))]


def _int(m: dict[str, Any], key: str) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise BusError(f"{key!r} is not an int: {v!r}"[:120])
    return v


def _str(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if not isinstance(v, str):
        raise BusError(f"{key!r} is not a string: {v!r}"[:120])
    return v


def _levels_in(v: Any, key: str) -> Levels:
    if not isinstance(v, list):
        raise BusError(f"{key!r} is not a list")
    out: Levels = []
    try:
        for lvl in v:
            if not isinstance(lvl, list) or len(lvl) != 2:
                raise BusError(f"{key!r} level is not [price, qty]: {lvl!r}"[:120])
            price = parse_decimal(lvl[0])
            if not price:
                raise BusError(f"{key!r} has price 0")
            out.append((price, parse_decimal(lvl[1])))
    except BadNumber as e:
        raise BusError(f"{key!r}: {e}") from None
    return out


def _exact_in(v: Any) -> tuple[Decimal | None, Decimal | None] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(p, str) for p in v):
        raise BusError("'x' is not [price or \"\", price or \"\"]")
    try:
        b, a = (parse_decimal(p) if p else None for p in v)
    except BadNumber as e:
        raise BusError(f"'x': {e}") from None
    return b, a


def decode_feed_payload(m: Any) -> FeedMsg:
    """A decoded feed map -> typed message, validating every field (:class:`BusError`)."""
    if not isinstance(m, dict):
        raise BusError("payload is not a map")
    ver = m.get("ver")
    if type(ver) is not int or ver != SCHEMA_VERSION:
        raise BusError(f"schema version {ver!r}, expected {SCHEMA_VERSION}"[:120])
    t = m.get("t")
    venue = _str(m, "v")
    sess = _int(m, "sess")
    rts = _int(m, "rts")
    if t == HEARTBEAT:
        seqs = m.get("seqs")
        if not isinstance(seqs, dict) or not all(
            isinstance(k, str) and isinstance(x, int) for k, x in seqs.items()
        ):
            raise BusError("'seqs' is not a map of symbol -> int")
        mode = m.get("mode", "")
        if not isinstance(mode, str) or len(mode) > 40:
            raise BusError("'mode' is not a short string")
        return HeartbeatMsg(venue, sess, rts, seqs, mode)
    symbol = _str(m, "s")
    seq = _int(m, "seq")
    if t in (SNAP, DELTA):
        return BookMsg(t, venue, symbol, sess, seq, _int(m, "ets"), rts,
                       _levels_in(m.get("b"), "b"), _levels_in(m.get("a"), "a"), _exact_in(m.get("x")))
    if t == STATUS:
        st = _str(m, "st")
        if st not in STATUSES:
            raise BusError(f"unknown status {st!r}"[:120])
        return StatusMsg(venue, symbol, sess, seq, st, str(m.get("why", "")), rts)
    raise BusError(f"unknown message type {t!r}"[:120])


def decode_feed(frames: Sequence[bytes]) -> FeedMsg:
    """Two frames off the feed bus -> typed message; checks the topic agrees with the payload."""
    if len(frames) != 2:
        raise BusError(f"{len(frames)} frames, expected 2")
    msg = decode_feed_payload(unpack(frames[1]))
    try:
        if isinstance(msg, HeartbeatMsg):
            expected = heartbeat_topic(msg.venue)
        else:
            expected = feed_topic(msg.venue, msg.symbol)
    except UnicodeEncodeError:
        raise BusError("venue or symbol is not ASCII") from None
    if bytes(frames[0]) != expected:
        raise BusError(f"topic {bytes(frames[0])[:60]!r} does not match payload {expected!r}")
    return msg


# --- feed control -----------------------------------------------------------------------------


def encode_snapshot_request(symbols: Sequence[str]) -> bytes:
    return _pack({"t": "snapreq", "s": list(symbols)})


def decode_snapshot_request(raw: bytes) -> list[str]:
    m = unpack(raw)
    if not isinstance(m, dict) or m.get("t") != "snapreq":
        raise BusError("not a snapshot request")
    syms = m.get("s")
    if not isinstance(syms, list) or not all(isinstance(s, str) for s in syms):
        raise BusError("'s' is not a list of symbols")
    return syms
