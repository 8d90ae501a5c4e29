"""Every message on the bookmux bus, its frame layout, and msgpack encode/decode in one place.

Numbers: prices and quantities are exact ``Decimal`` in process and decimal *text* on the wire
(see :mod:`common.numbers`). Times are integer nanoseconds since the Unix epoch.

Feed bus (each feed process PUB-binds; the aggregator SUB-connects to every feed)
---------------------------------------------------------------------------------
Every message is two frames::

    frame 0  topic    ASCII  "md.<venue>.<SYMBOL>"   e.g. b"md.binance.BTC/USDT"
                             "hb.<venue>"            for the feed heartbeat
    frame 1  payload  msgpack ARRAY, one field per position (schema version 2, below)

    snap / delta  [t, ver, v, sess, s, seq, ets, rts, b, a]  or  [..., b, a, x]
    status        [t, ver, v, sess, s, seq, rts, st, why]
    hb            [t, ver, v, sess, rts, seqs]  or  [..., seqs, mode]

    pos  field  type        meaning
    0    t      str         "snap" | "delta" | "status" | "hb" (selects the layout)
    1    ver    int         schema version (SCHEMA_VERSION, 2); any other value is dropped
    2    v      str         venue id, lowercase ("binance", "binance_us", "bitstamp")
    3    sess   int         feed session: changes when the feed process restarts
    s           str         snap/delta/status: canonical symbol "BASE/QUOTE"
    seq         int         snap/delta/status: per (venue, symbol) stream, +1 per message, from 1
    ets         int         snap/delta: exchange timestamp (ns), 0 when the venue gives none
    rts         int         receive timestamp (ns): when the feed read the frame that made it
    b, a        [[p, q]]    snap/delta: bids / asks as [price text, quantity text]; in a delta q
                            is the new absolute size and "0" removes the level
    x           [p|"", p|""]  snap/delta, optional last: per side (bids, asks) the deepest price
                            down to which the venue book is known exactly ("" = the whole side);
                            on a snap when the venue caps its depth, on a delta when it changed
    st          str         status: "live" | "syncing" | "stale" | "down"
    why         str         status: human-readable reason
    seqs        {s: int}    hb: last seq published per symbol (lets a receiver see a lost tail)
    mode        str         hb, optional last (<= 40 chars): the venue's trading mode when it
                            reports one ("online", "cancel_only", "post_only", "maintenance", ...)

Validation is as strict as the fields say: a wrong type at any position (a bool or a float for an
int, bin for a str), a position missing or one too many, an unknown ``t``, a ``ver`` other than
the int 2, a status outside the four, and every price/quantity text that
:func:`common.numbers.parse_decimal` refuses (NaN, infinities, negatives, above ``MAX_ABS``,
more than ``MAX_DECIMALS`` decimals, not a number, not a string) or a price of 0, is a
:class:`BusError` naming the field, which the aggregator counts and drops. Schema 1 (a msgpack map
per message) is refused with a message that says so. A new field means a new version: positions
are never reused. Numbers stay decimal text: exact, whatever the venue's precision.

A ``snap`` replaces the venue book of that symbol and means the stream is synced (``live``); a
``status`` other than ``live`` means the receiver must drop that venue's levels for the symbol
until the next ``snap``. Seq numbers count snaps, deltas and statuses alike, so any lost message of
a stream shows as a jump.

Feed control (each feed ROUTER-binds; receivers DEALER-connect)
---------------------------------------------------------------
Request, one frame: msgpack map ``{"t": "snapreq", "s": [symbols]}`` (an empty list = all).
Reply: one frame per requested symbol, each a feed payload array as above (:func:`decode_feed_bytes`):
a ``snap`` (with the stream's current ``seq``) when the symbol is synced, else its current
``status``. The receiver drops stream messages with ``seq`` at or below the reply's (the ZeroMQ
Guide's clone pattern).

Merged book (aggregator PUB -> publisher SUB, and publisher -> subscribers)
---------------------------------------------------------------------------
Two frames: topic ``book.<BASE>/<QUOTE>`` and a msgpack map, the subscriber contract of the README,
in this key order (one codec: :class:`MergedBook`, :func:`encode_merged`, :func:`decode_merged`)::

    key        type              meaning
    symbol     str               "BTC/USDT" (the topic names the same symbol)
    epoch      int               the aggregator run; changes when it restarts
    seq        int               per symbol, +1 per snapshot within an epoch
    ts         int               ns: receive time of the newest input this snapshot reflects
    spread     str | nil         best ask - best bid (negative when venues cross); nil: a side is empty
    bids/asks  [[p, q, venue]]   best first, canonical text (:func:`common.numbers.fmt`)
    venues     {venue: str}      "live" | "syncing" | "stale" | "down"
    depletion  {side: {size: {filled, vwap, worst, slippage_bps, levels, partial}}}  where configured
    venue_ts   {venue: {ets, rts, heard}}   freshness, ns (0: not yet): exchange and receive time
               of the last update of this symbol's book from the venue, and when the aggregator
               last heard anything from the venue's feed (refreshed with every snapshot)

Latest endpoint (publisher ROUTER <- latest-only subscribers' DEALER; ``publisher.latest_port``)
---------------------------------------------------------------------------------------------------
The newest merged book of each wanted symbol, on request: a subscriber that stalls and comes back
reads the book of *now*, never a queue of old ones (the ZeroMQ Guide's clone pattern, with a
credit of one answer per request). Request, one frame (a REQ socket works too: the publisher
echoes every frame before the last one as the envelope)::

    {"t": "latest", "id": int, "s": [symbols], "have": {symbol: [epoch, seq]}, "wait": seconds}

    id     the client's request number, echoed in the answer (>= 0)
    s      the symbols wanted; [] = every symbol (at most LATEST_MAX_SYMBOLS)
    have   the (epoch, seq) the client already holds per symbol (omitted: none)
    wait   how long the publisher may hold the request when nothing newer exists (0: answer now;
           capped at LATEST_MAX_WAIT)

A book is *newer* than ``have`` when its epoch differs or its seq is greater. The publisher answers
each request once: at once when it holds a newer book of a wanted symbol, else as soon as one is
published, else with no books when ``wait`` has passed. A later request of the same client
replaces one it still holds. The answer, ``1 + 2n`` frames::

    frame 0            msgpack {"t": "books", "id": int, "n": int}
    frames 1+2i, 2+2i  topic ``book.<SYMBOL>`` and payload: one merged book, the very bytes the SUB
                       path sends (the newest the publisher holds of that symbol)

``{"t": "stats", "id": int}`` -> one frame ``{"t": "stats", "id", "waiting": clients holding a
request, "books": {symbol: [epoch, seq]} (the newest of each), "counters": {name: int}}``.
Anything malformed or refused -> one frame ``{"t": "error", "id": int (0 if unknown), "error": str}``.

Keys are only ever added (never changed or removed); a decoder keeps the keys it does not know in
:attr:`MergedBook.extra` and the encoder writes them back after the known ones. The publisher
forwards the aggregator's payload bytes unchanged (:func:`peek_merged_header` checks the header
and the shape without decoding the levels), or :func:`cut_merged` re-encodes it with fewer levels.
"""

from __future__ import annotations

import decimal
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, NamedTuple

import msgpack
import msgspec

from common.numbers import MAX_ABS, MAX_DECIMALS, ZERO, BadNumber, fmt, parse_decimal

#: Feed-bus schema version (position 1 of every feed payload). 1 was a msgpack map per message.
SCHEMA_VERSION = 2

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
#
# Wire form: one msgpack array per message, each field at a fixed position (the module
# docstring's table). msgspec decodes it into the typed ``_*Wire`` structs below, checking every
# position's type in C while it reads the bytes (a tagged union on position 0, the version a
# literal, too few or too many positions refused), so the Python left per message is the level
# numbers' text -> Decimal (memoised by text, as strict as :func:`common.numbers.parse_decimal`)
# and building the message object. The encoder writes a Decimal as ``str(d)`` in C.


class _SnapWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=SNAP):
    """Positions 1.. of a ``snap`` (position 0 is the tag); also the layout of a ``delta``."""

    ver: Literal[2]           # SCHEMA_VERSION (a literal type cannot name the constant)
    v: str
    sess: int
    s: str
    seq: int
    ets: int
    rts: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    x: tuple[str, str] | None = None


class _DeltaWire(_SnapWire, tag=DELTA):
    """A ``delta``: the positions of a snap."""


class _StatusWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=STATUS):
    ver: Literal[2]
    v: str
    sess: int
    s: str
    seq: int
    rts: int
    st: Literal["live", "syncing", "stale", "down"]   # STATUSES
    why: str = ""


class _HeartbeatWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=HEARTBEAT):
    ver: Literal[2]
    v: str
    sess: int
    rts: int
    seqs: dict[str, int]
    mode: Annotated[str, msgspec.Meta(max_length=40)] = ""


_FEED_DECODER = msgspec.msgpack.Decoder(_SnapWire | _DeltaWire | _StatusWire | _HeartbeatWire)
_ENCODER = msgspec.msgpack.Encoder()

#: Field names by position, per message type (error messages only).
_POSITIONS = {SNAP: ("t", "ver", "v", "sess", "s", "seq", "ets", "rts", "b", "a", "x"),
              DELTA: ("t", "ver", "v", "sess", "s", "seq", "ets", "rts", "b", "a", "x"),
              STATUS: ("t", "ver", "v", "sess", "s", "seq", "rts", "st", "why"),
              HEARTBEAT: ("t", "ver", "v", "sess", "rts", "seqs", "mode")}
_AT = re.compile(r"`\$\[(\d+)\]")


#: Bus level text -> Decimal, memoised (plain dicts: a hit is one ``dict.get``, a miss costs
#: little more than the parse). Prices come again and again on a stream; of sizes, only the zeros
#: that delete levels repeat much ("0E-8": 8 % of the recorded Binance levels, 44 % of Bitstamp's
#: with "0.00000") and they cost the most to parse (exponent notation takes the decimals check).
#: Each memo is emptied when it reaches :data:`_MEMO_MAX` entries (~200 bytes each). Errors are
#: never stored; Decimals are immutable, so one object may sit in many books.
_price_memo: dict[str, Decimal] = {}
_qty_memo: dict[str, Decimal] = {}
_MEMO_MAX = 1 << 15


def _bus_price(text: str) -> Decimal:
    """A bus price the memo does not hold: :func:`common.numbers.parse_decimal` and not 0."""
    d = parse_decimal(text)
    if not d:
        raise BadNumber("price 0")
    if len(_price_memo) >= _MEMO_MAX:
        _price_memo.clear()
    _price_memo[text] = d
    return d


def _bus_qty(text: str) -> Decimal:
    """A bus quantity the memo does not hold: :func:`common.numbers.parse_decimal`; only zeros are
    kept (other sizes rarely repeat: storing them cost more than the hits saved)."""
    d = parse_decimal(text)
    if not d:
        if len(_qty_memo) >= _MEMO_MAX:
            _qty_memo.clear()
        _qty_memo[text] = d
    return d


def _exact_text(p: Decimal | None) -> str:
    return "" if p is None else str(p)


def feed_payload(msg: FeedMsg) -> list[Any]:
    """The array of a feed message as plain data (numbers as text): what :func:`encode_feed_payload`
    writes, for tools and tests (``pack(feed_payload(m)) == encode_feed_payload(m)``)."""
    if isinstance(msg, BookMsg):
        m: list[Any] = [msg.kind, SCHEMA_VERSION, msg.venue, msg.sess, msg.symbol, msg.seq, msg.ets, msg.rts,
                        [[str(p), str(q)] for p, q in msg.bids], [[str(p), str(q)] for p, q in msg.asks]]
        if msg.exact is not None:
            m.append([_exact_text(p) for p in msg.exact])
        return m
    if isinstance(msg, StatusMsg):
        return [STATUS, SCHEMA_VERSION, msg.venue, msg.sess, msg.symbol, msg.seq, msg.rts, msg.status, msg.reason]
    hb: list[Any] = [HEARTBEAT, SCHEMA_VERSION, msg.venue, msg.sess, msg.rts, dict(msg.seqs)]
    if msg.mode:
        hb.append(msg.mode)
    return hb


def encode_feed_payload(msg: FeedMsg) -> bytes:
    """A feed message -> its payload frame (also one frame of a snapshot reply). O(levels), in C
    but for the array of fields."""
    if isinstance(msg, BookMsg):
        x = msg.exact
        if x is None:
            return _ENCODER.encode((msg.kind, SCHEMA_VERSION, msg.venue, msg.sess, msg.symbol, msg.seq, msg.ets,
                                    msg.rts, msg.bids, msg.asks))
        return _ENCODER.encode((msg.kind, SCHEMA_VERSION, msg.venue, msg.sess, msg.symbol, msg.seq, msg.ets,
                                msg.rts, msg.bids, msg.asks, (_exact_text(x[0]), _exact_text(x[1]))))
    if isinstance(msg, StatusMsg):
        return _ENCODER.encode((STATUS, SCHEMA_VERSION, msg.venue, msg.sess, msg.symbol, msg.seq, msg.rts,
                                msg.status, msg.reason))
    if msg.mode:
        return _ENCODER.encode((HEARTBEAT, SCHEMA_VERSION, msg.venue, msg.sess, msg.rts, msg.seqs, msg.mode))
    return _ENCODER.encode((HEARTBEAT, SCHEMA_VERSION, msg.venue, msg.sess, msg.rts, msg.seqs))


def encode_feed(msg: FeedMsg) -> list[bytes]:
    """A feed message -> its two frames ``[topic, payload]``."""
    topic = heartbeat_topic(msg.venue) if isinstance(msg, HeartbeatMsg) else feed_topic(msg.venue, msg.symbol)
    return [topic, encode_feed_payload(msg)]


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


def _levels_in(levels: list[tuple[str, str]], key: str, _pm: Any = _price_memo.get,
               _qm: Any = _qty_memo.get) -> Levels:
    """Bus levels (text) -> ``[(price, qty)]``, each number exactly as
    :func:`common.numbers.parse_decimal` takes it and every price > 0 (:class:`BusError` naming
    ``key``). Short lists go level by level with the memos; long ones (snaps) first try
    :func:`_levels_bulk`, which only ever accepts what this loop accepts."""
    if len(levels) >= _BULK_LEVELS:
        out = _levels_bulk(levels)
        if out is not None:
            return out
    try:
        return [(_pm(p) or _bus_price(p), q_ if (q_ := _qm(q)) is not None else _bus_qty(q)) for p, q in levels]
    except BadNumber as e:
        raise BusError(f"{key!r}: {e}"[:160]) from None


#: Sides of at least this many levels try :func:`_levels_bulk` first.
_BULK_LEVELS = 16


def _levels_bulk(levels: list[tuple[str, str]]) -> Levels | None:
    """The levels when every text is a plain decimal (no exponent, at most MAX_DECIMALS
    characters, so never too many decimals), every price in (0, MAX_ABS] and every quantity in
    [0, MAX_ABS]; else None (the caller checks level by level). Whole-list C calls (``map``,
    ``min``, ``max``, ``join``) instead of two Python calls per level: a cold snap of 750 levels
    decodes in ~0.65x the time of the level-by-level loop (``python -m bench.buscodec``)."""
    ps, qs = zip(*levels)
    texts = "".join(ps) + "".join(qs)
    if "e" in texts or "E" in texts or max(map(len, ps)) > MAX_DECIMALS or max(map(len, qs)) > MAX_DECIMALS:
        return None
    try:
        pd = list(map(Decimal, ps))
        qd = list(map(Decimal, qs))
        # NaN cannot be ordered (InvalidOperation); infinities and negatives fail the bounds
        ok = min(pd) > ZERO and max(pd) <= MAX_ABS and min(qd) >= ZERO and max(qd) <= MAX_ABS
    except InvalidOperation:
        return None
    return list(zip(pd, qd)) if ok else None


def _exact_in(x: tuple[str, str]) -> tuple[Decimal | None, Decimal | None]:
    try:
        return (parse_decimal(x[0]) if x[0] else None), (parse_decimal(x[1]) if x[1] else None)
    except BadNumber as e:
        raise BusError(f"'x': {e}"[:160]) from None


def _short(v: Any) -> str:
    """repr of a scalar (cut), the type name of anything else (a container may nest deeply)."""
    return repr(v)[:40] if v is None or type(v) in (str, bytes, int, float, bool) else type(v).__name__


def _explain(raw: Any, e: Exception) -> str:
    """Why ``raw`` did not decode, naming the field (the error path only: it unpacks ``raw``
    again, generically, to find the message type and version)."""
    text = str(e)
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return f"bad msgpack: {text}"[:160]
    if isinstance(obj, dict):
        return (f"payload is a map (feed-bus schema {_short(obj.get('ver'))}?), expected the array of "
                f"schema {SCHEMA_VERSION}")[:160]
    if not isinstance(obj, list) or not obj:
        return f"payload is not a feed message array: {text}"[:160]
    names = _POSITIONS.get(obj[0]) if type(obj[0]) is str else None
    if names is None:
        return f"unknown message type {_short(obj[0])}"[:120]
    if len(obj) > 1 and (type(obj[1]) is not int or obj[1] != SCHEMA_VERSION):
        return f"schema version {_short(obj[1])}, expected {SCHEMA_VERSION}"[:120]
    at = _AT.search(text)
    if at is not None and int(at.group(1)) < len(names):
        return f"{obj[0]} {names[int(at.group(1))]!r}: {text}"[:160]
    return f"{obj[0]}: {text}"[:160]


def decode_feed_bytes(raw: bytes) -> FeedMsg:
    """One payload frame (of the bus or of a snapshot reply) -> typed message, every field
    validated (:class:`BusError` naming the field). O(levels)."""
    try:
        w = _FEED_DECODER.decode(raw)
    except Exception as e:   # msgspec.DecodeError / ValidationError; anything else is garbage too
        raise BusError(_explain(raw, e)) from None
    t = type(w)
    if t is _DeltaWire or t is _SnapWire:
        return BookMsg(DELTA if t is _DeltaWire else SNAP, w.v, w.s, w.sess, w.seq, w.ets, w.rts,
                       _levels_in(w.b, "b"), _levels_in(w.a, "a"), None if w.x is None else _exact_in(w.x))
    if t is _StatusWire:
        return StatusMsg(w.v, w.s, w.sess, w.seq, w.st, w.why, w.rts)
    return HeartbeatMsg(w.v, w.sess, w.rts, w.seqs, w.mode)


def decode_feed_payload(m: Any) -> FeedMsg:
    """An already unpacked feed payload (:func:`unpack`) -> typed message, as
    :func:`decode_feed_bytes` (which is cheaper: it reads the bytes once)."""
    try:
        raw = _pack(m)
    except Exception as e:
        raise BusError(f"payload does not pack: {e}"[:120]) from None
    return decode_feed_bytes(raw)


def decode_feed(frames: Sequence[bytes]) -> FeedMsg:
    """Two frames off the feed bus -> typed message; checks the topic agrees with the payload."""
    if len(frames) != 2:
        raise BusError(f"{len(frames)} frames, expected 2")
    msg = decode_feed_bytes(frames[1])
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


# --- merged book (the subscriber message) -----------------------------------------------------


class Level(NamedTuple):
    """One merged level: exact price and amount, and the venue that quotes it."""

    price: Decimal
    amount: Decimal
    venue: str


class VenueTimes(NamedTuple):
    """Freshness of one venue for one symbol, ns since the Unix epoch (0: not yet).

    ``ets``/``rts``: exchange and receive time of the last update of this symbol's book from the
    venue; ``heard``: when the aggregator last heard anything (message or heartbeat) from the
    venue's feed. A quiet market has an old ``rts`` and a recent ``heard``; a frozen feed has both
    old."""

    ets: int
    rts: int
    heard: int


@dataclass(frozen=True, slots=True)
class DepletionSummary:
    """The streamed cost of trading one configured size on the merged book (see
    docs/depletion.md): ``vwap``/``worst``/``slippage_bps`` are None when nothing was filled."""

    filled: Decimal
    vwap: Decimal | None
    worst: Decimal | None
    slippage_bps: Decimal | None
    levels: int
    partial: bool
    #: The deepest price the merged side is known exactly to (None: all of it), and whether this
    #: walk went past it (see docs/depletion.md, "Known depth"); None: the sender did not say.
    exact_to: Decimal | None = None
    beyond_known_depth: bool | None = None


#: ``{"buy" | "sell": {size: summary}}``, sizes in the configured order.
Depletion = dict[str, dict[Decimal, DepletionSummary]]

_MID = Decimal("0.5")
#: Enough digits for any sum of two wire values (at most 1e18 with 18 decimals): exact.
_EXACT = decimal.Context(prec=80)


@dataclass(slots=True)
class MergedBook:
    """One merged-book snapshot as subscribers receive it, typed (Decimal prices and amounts).

    The wire fields are documented in the module docstring. ``depletion`` and ``venue_ts`` are
    None when the sender did not include them; ``extra`` holds any key this codec does not know
    (a newer sender), written back by :func:`encode_merged`.

    ``missed``, ``new_epoch``, ``received_ns`` and ``conflated`` are the receiver's view, never on
    the wire: :mod:`common.subscriber` sets them (snapshots of this symbol missed right before this
    one; True when an earlier snapshot of this symbol had another epoch; local receive time, ns;
    snapshots skipped on purpose by a latest-only subscription).
    """

    symbol: str
    epoch: int
    seq: int
    ts: int
    spread: Decimal | None
    bids: list[Level]
    asks: list[Level]
    venues: dict[str, str]
    depletion: Depletion | None = None
    venue_ts: dict[str, VenueTimes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``{venue: mode}`` for venues that report a trading mode (Kraken: "cancel_only", ...).
    venue_modes: dict[str, str] | None = None
    missed: int = 0
    new_epoch: bool = False
    received_ns: int = 0
    #: Latest-only subscriptions: snapshots of this symbol skipped on purpose since the previous
    #: book (the publisher sent only the newest); never counted in ``missed``.
    conflated: int = 0

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None

    @property
    def mid(self) -> Decimal | None:
        """(best bid + best ask) / 2, exact; None when a side is empty."""
        if not self.bids or not self.asks:
            return None
        return _EXACT.multiply(_EXACT.add(self.bids[0].price, self.asks[0].price), _MID)


#: Canonical text of a price, memoised (one cache per process: the aggregator's merged view uses it
#: too): the prices near the top of a book are published again and again (amounts rarely repeat:
#: not cached). 8192 entries is ~2.7 MB; a cache of 65536 held ~23 MB, which the soak showed as a
#: steady RSS climb until it filled.
price_text = functools.lru_cache(maxsize=8192)(fmt)


def _opt_text(d: Decimal | None) -> str | None:
    return None if d is None else fmt(d)


def _levels_wire(levels: Sequence[tuple[Decimal, Decimal, str]]) -> list[list[str]]:
    return [[price_text(p), fmt(a), v] for p, a, v in levels]


def depletion_wire(depl: Depletion) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``depletion`` map of a snapshot (canonical text, keys in the contract's order)."""
    return {side: {fmt(size): _summary_wire(d) for size, d in sizes.items()} for side, sizes in depl.items()}


def _summary_wire(d: DepletionSummary) -> dict[str, Any]:
    m = {"filled": fmt(d.filled), "vwap": _opt_text(d.vwap), "worst": _opt_text(d.worst),
         "slippage_bps": _opt_text(d.slippage_bps), "levels": d.levels, "partial": d.partial}
    if d.beyond_known_depth is not None:
        m["exact_to"] = _opt_text(d.exact_to)
        m["beyond_known_depth"] = d.beyond_known_depth
    return m


def merged_payload(book: MergedBook, *, depletion: Mapping[str, Any] | None = None,
                   wire: tuple[list[list[str]], list[list[str]]] | None = None) -> dict[str, Any]:
    """The msgpack map of a merged book (before packing), keys in the contract's order; the
    ``extra`` keys follow (a known key always wins over an extra one of the same name).

    ``depletion``: the map already in wire form, used instead of ``book.depletion`` (the
    aggregator's depletion engine produces canonical text; parsing it into Decimals only to
    print it again cost ~25 us per snapshot). ``wire``: ``(bids, asks)`` already in wire form
    (``[price, amount, venue]`` canonical text, the same as ``book.bids``/``book.asks``), used
    instead of formatting them again (the aggregator keeps the text of levels it published)."""
    bids, asks = wire if wire is not None else (_levels_wire(book.bids), _levels_wire(book.asks))
    m: dict[str, Any] = {
        "symbol": book.symbol, "epoch": book.epoch, "seq": book.seq, "ts": book.ts,
        "spread": None if book.spread is None else fmt(book.spread),
        "bids": bids, "asks": asks, "venues": dict(book.venues),
    }
    if depletion is not None:
        m["depletion"] = depletion
    elif book.depletion is not None:
        m["depletion"] = depletion_wire(book.depletion)
    if book.venue_ts is not None:
        m["venue_ts"] = {v: {"ets": t.ets, "rts": t.rts, "heard": t.heard} for v, t in book.venue_ts.items()}
    if book.venue_modes:
        m["venue_modes"] = dict(book.venue_modes)
    for k, v in book.extra.items():
        m.setdefault(k, v)
    return m


def encode_merged(book: MergedBook, *, depletion: Mapping[str, Any] | None = None,
                  wire: tuple[list[list[str]], list[list[str]]] | None = None) -> list[bytes]:
    """A merged book -> its two frames ``[topic, payload]`` (the aggregator's one encoder;
    ``depletion`` and ``wire`` as in :func:`merged_payload`)."""
    return [book_topic(book.symbol), _pack(merged_payload(book, depletion=depletion, wire=wire))]


def _signed(v: Any, key: str) -> Decimal:
    """A decimal text that may be negative (a crossed spread)."""
    if type(v) is not str or len(v) > 64:
        raise BusError(f"{key!r} is not a decimal string: {v!r}"[:120])
    try:
        d = Decimal(v)
        ok = d.is_finite() and abs(d) <= MAX_ABS
    except InvalidOperation:
        ok = False
    if not ok:
        raise BusError(f"{key!r} is not a finite decimal: {v!r}"[:120])
    return d


def _number(v: Any, key: str) -> Decimal:
    try:
        return parse_decimal(v)
    except BadNumber as e:
        raise BusError(f"{key!r}: {e}") from None


def _merged_levels(v: Any, key: str) -> list[Level]:
    if not isinstance(v, list):
        raise BusError(f"{key!r} is not a list")
    out: list[Level] = []
    for lvl in v:
        if not isinstance(lvl, list) or len(lvl) != 3 or not isinstance(lvl[2], str):
            raise BusError(f"{key!r} level is not [price, amount, venue]: {lvl!r}"[:120])
        out.append(Level(_number(lvl[0], key), _number(lvl[1], key), lvl[2]))
    return out


def _opt_number(v: Any, key: str, *, signed: bool = False) -> Decimal | None:
    if v is None:
        return None
    return _signed(v, key) if signed else _number(v, key)


def decode_depletion(v: Any) -> Depletion:
    """A ``depletion`` map -> typed summaries (:class:`BusError` naming the key when malformed)."""
    if not isinstance(v, dict):
        raise BusError("'depletion' is not a map")
    out: Depletion = {}
    for side, sizes in v.items():
        if not isinstance(side, str) or not isinstance(sizes, dict):
            raise BusError(f"'depletion' side {side!r} is not a map of sizes"[:120])
        got: dict[Decimal, DepletionSummary] = {}
        for size, d in sizes.items():
            try:
                if not isinstance(d, dict):
                    raise BusError("not a map")
                levels, partial = d.get("levels"), d.get("partial")
                beyond = d.get("beyond_known_depth")
                if type(levels) is not int or type(partial) is not bool or type(beyond) not in (bool, type(None)):
                    raise BusError("'levels' must be an int, 'partial' and 'beyond_known_depth' bools")
                got[_number(size, "size")] = DepletionSummary(
                    _number(d.get("filled"), "filled"), _opt_number(d.get("vwap"), "vwap"),
                    _opt_number(d.get("worst"), "worst"),
                    _opt_number(d.get("slippage_bps"), "slippage_bps", signed=True), levels, partial,
                    _opt_number(d.get("exact_to"), "exact_to"), beyond)
            except BusError as e:   # the key path is only built for an error
                raise BusError(f"'depletion.{side}.{size}': {e}"[:160]) from None
        out[side] = got
    return out


def _venue_ts(v: Any) -> dict[str, VenueTimes]:
    if not isinstance(v, dict):
        raise BusError("'venue_ts' is not a map")
    out: dict[str, VenueTimes] = {}
    for venue, t in v.items():
        if not isinstance(venue, str) or not isinstance(t, dict):
            raise BusError(f"'venue_ts' of {venue!r} is not a map"[:120])
        out[venue] = VenueTimes(_int(t, "ets"), _int(t, "rts"), _int(t, "heard"))
    return out


_MERGED_KNOWN = frozenset(("symbol", "epoch", "seq", "ts", "spread", "bids", "asks", "venues", "depletion",
                           "venue_ts", "venue_modes"))


def decode_merged_payload(m: Any) -> MergedBook:
    """A decoded merged-book map -> :class:`MergedBook`, validating every known field
    (:class:`BusError` naming the key); unknown keys go to ``extra``. O(levels)."""
    if not isinstance(m, dict):
        raise BusError("payload is not a map")
    venues = m.get("venues")
    if not isinstance(venues, dict) or not all(isinstance(k, str) and isinstance(s, str) for k, s in venues.items()):
        raise BusError("'venues' is not a map of venue -> status")
    spread = m.get("spread")
    depl = m.get("depletion")
    vts = m.get("venue_ts")
    modes = m.get("venue_modes")
    if modes is not None and not (isinstance(modes, dict) and all(
            isinstance(k, str) and isinstance(x, str) for k, x in modes.items())):
        raise BusError("'venue_modes' is not a map of venue -> mode")
    return MergedBook(
        _str(m, "symbol"), _int(m, "epoch"), _int(m, "seq"), _int(m, "ts"),
        None if spread is None else _signed(spread, "spread"),
        _merged_levels(m.get("bids"), "bids"), _merged_levels(m.get("asks"), "asks"), venues,
        None if depl is None else decode_depletion(depl), None if vts is None else _venue_ts(vts),
        {k: v for k, v in m.items() if k not in _MERGED_KNOWN}, modes)


def decode_merged(frames: Sequence[bytes]) -> MergedBook:
    """Two frames from the publisher (or the aggregator) -> :class:`MergedBook`; checks the
    topic names the payload's symbol exactly (:class:`BusError` otherwise)."""
    if len(frames) != 2:
        raise BusError(f"{len(frames)} frames, expected 2")
    book = decode_merged_payload(unpack(frames[1]))
    try:
        expected = book_topic(book.symbol)
    except UnicodeEncodeError:
        raise BusError("symbol is not ASCII") from None
    if bytes(frames[0]) != expected:
        raise BusError(f"topic {bytes(frames[0])[:60]!r} does not match payload {expected!r}")
    return book


def peek_merged(frames: Sequence[bytes]) -> tuple[dict[str, Any], str, int, int]:
    """Check a merged-book message's header without decoding its levels (the publisher forwards
    the bytes unchanged): returns ``(map, symbol, epoch, seq)``; :class:`BusError` when the
    frames, the topic or ``symbol``/``epoch``/``seq``/``bids``/``asks`` are malformed."""
    if len(frames) != 2:
        raise BusError(f"{len(frames)} frames, expected 2")
    m = unpack(frames[1])
    if not isinstance(m, dict):
        raise BusError("payload is not a map")
    symbol, epoch, seq = _str(m, "symbol"), _int(m, "epoch"), _int(m, "seq")
    try:
        expected = book_topic(symbol)
    except UnicodeEncodeError:
        raise BusError("symbol is not ASCII") from None
    if bytes(frames[0]) != expected:
        raise BusError(f"topic {bytes(frames[0])[:60]!r} does not match payload {expected!r}")
    if not isinstance(m.get("bids"), list) or not isinstance(m.get("asks"), list):
        raise BusError("'bids'/'asks' are not lists")
    return m, symbol, epoch, seq


def cut_merged(m: Mapping[str, Any], levels: int) -> bytes | None:
    """The payload of map ``m`` (from :func:`peek_merged`) cut to ``levels`` per side, every
    other key unchanged; None when it has no more than that (forward the original bytes)."""
    if len(m["bids"]) <= levels and len(m["asks"]) <= levels:
        return None
    out = dict(m)
    out["bids"] = m["bids"][:levels]
    out["asks"] = m["asks"][:levels]
    return _pack(out)


#: Keys :class:`MergedPeek` decodes (every other value is only stepped over).
_HEADER_KEYS = frozenset(("symbol", "epoch", "seq", "ts"))
#: The keys :func:`_in_order_prefix` and ``MergedPeek._rest_in_order`` read in place.
_IN_ORDER = frozenset(("symbol", "epoch", "seq", "ts", "spread", "bids", "asks"))
#: msgpack unsigned int headers -> their width in bytes.
_UINT = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
#: A merged book's header, as :class:`MergedPeek` returns it:
#: ``(symbol, epoch, seq, ts or None, bid levels, ask levels)``.
MergedHeader = tuple[str, int, int, int | None, int, int]


@functools.lru_cache(maxsize=4096)
def _topic_of(symbol: str) -> bytes | None:
    try:
        return book_topic(symbol)
    except UnicodeEncodeError:
        return None


@functools.lru_cache(maxsize=4096)
def _contract_prefix(topic: bytes) -> tuple[str, bytes] | None:
    """The symbol a ``book.`` topic names and the bytes a payload in the contract's key order has
    after its map header: ``"symbol"``, that symbol, ``"epoch"``; None for any other topic."""
    if not topic.startswith(b"book."):
        return None
    try:
        symbol = topic[5:].decode("ascii")
    except UnicodeDecodeError:
        return None
    return symbol, _pack("symbol") + _pack(symbol) + _pack("epoch")


def _array_len(raw: bytes, i: int) -> int:
    """The length of the msgpack array whose header starts at ``raw[i]``; -1 when none does."""
    if i >= len(raw):
        return -1
    b = raw[i]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC or b == 0xDD:
        w = 2 if b == 0xDC else 4
        return int.from_bytes(raw[i + 1:i + 1 + w], "big") if i + w < len(raw) else -1
    return -1


def _uint_at(raw: bytes, i: int) -> tuple[int, int]:
    """The msgpack unsigned int at ``raw[i]`` and the offset after it; (-1, i) when there is none."""
    b = raw[i]
    if b < 0x80:
        return b, i + 1
    w = _UINT.get(b, 0)
    if not w or i + w >= len(raw):
        return -1, i
    return int.from_bytes(raw[i + 1:i + 1 + w], "big"), i + 1 + w


def _in_order_prefix(topic: bytes, raw: bytes) -> tuple[str, int, int, int, int, int] | None:
    """The header of a payload laid out as the aggregator writes it (the contract's key order,
    non-negative ints, ``spread`` nil or a short text), read in place: ``(symbol, epoch, seq, ts,
    bid levels, offset of the bids list)``; None when the layout differs. O(1)."""
    fixed = _contract_prefix(topic)
    if fixed is None or len(raw) < 64:
        return None
    symbol, prefix = fixed
    if not 0x87 <= raw[0] <= 0x8F or not raw.startswith(prefix, 1):
        return None
    epoch, i = _uint_at(raw, 1 + len(prefix))
    if epoch < 0 or not raw.startswith(b"\xa3seq", i):
        return None
    seq, i = _uint_at(raw, i + 4)
    if seq < 0 or not raw.startswith(b"\xa2ts", i):
        return None
    ts, i = _uint_at(raw, i + 3)
    if ts < 0 or not raw.startswith(b"\xa6spread", i):
        return None
    i += 7
    b = raw[i]
    if b == 0xC0:
        i += 1
    elif 0xA0 <= b <= 0xBF:
        i += 1 + (b & 0x1F)
    else:
        return None
    if not raw.startswith(b"\xa4bids", i):
        return None
    bids = _array_len(raw, i + 5)
    if bids < 0:
        return None
    return symbol, epoch, seq, ts, bids, i + 5


class MergedPeek:
    """Checks merged-book messages without building their levels (the publisher forwards the
    bytes unchanged). One per thread: it reuses one msgpack unpacker (making one zeroes ~40 KB).

    ``peek(topic, payload)`` returns :data:`MergedHeader`, ``ts`` None when absent or not an
    int. :class:`BusError` when the payload is not one well-formed msgpack map with str keys,
    ``symbol``/``epoch``/``seq`` are missing or of the wrong type, ``bids``/``asks`` are not
    lists, or the topic does not name the payload's symbol exactly (what :func:`peek_merged`
    checks, without decoding any level: each list, and every value but the header's, is stepped
    over at once by msgpack's C unpacker, so its strings are not decoded). No Python work and no
    allocation per level. The aggregator's own layout (the contract's key order) is read in place
    up to the bids; any other order of keys is walked key by key.
    """

    def __init__(self) -> None:
        self._u = self._unpacker()

    @staticmethod
    def _unpacker() -> msgpack.Unpacker:
        return msgpack.Unpacker(raw=False, strict_map_key=True)

    def peek(self, topic: bytes, payload: bytes) -> MergedHeader:
        u = self._u
        base = u.tell()
        u.feed(payload)
        try:
            head = _in_order_prefix(topic, payload)
            got = self._rest_in_order(u, payload, head) if head is not None else None
            if got is None:             # another layout: start again, key by key
                self._u = u = self._unpacker()
                u.feed(payload)
                base = 0
                got = self._walk(u, topic, payload)
            if u.tell() - base != len(payload):
                raise BusError(f"bad msgpack: {len(payload) - u.tell() + base} bytes after the map")
            return got
        except BusError:
            self._u = self._unpacker()  # drop what is left of this payload
            raise
        except Exception as e:  # OutOfData, FormatError, StackError, ValueError, ...
            self._u = self._unpacker()
            raise BusError(f"bad msgpack: {type(e).__name__} {e}"[:160]) from None

    @staticmethod
    def _rest_in_order(u: msgpack.Unpacker, raw: bytes, head: tuple[str, int, int, int, int, int]
                       ) -> MergedHeader | None:
        symbol, epoch, seq, ts, bids, at = head
        base = u.tell()
        u.read_bytes(at)                # the header, read in place already
        u.skip()                        # the bids, at once
        if u.unpack() != "asks":
            return None
        asks = _array_len(raw, u.tell() - base)
        if asks < 0:
            return None
        u.skip()
        for _ in range(raw[0] - 0x87):  # venues, depletion, venue_ts, ...: stepped over
            k = u.unpack()
            if type(k) is not str or k in _IN_ORDER:    # a key again: walked (the last one counts)
                return None
            u.skip()
        return symbol, epoch, seq, ts, bids, asks

    @staticmethod
    def _walk(u: msgpack.Unpacker, topic: bytes, raw: bytes) -> MergedHeader:
        symbol: Any = None
        epoch: Any = None
        seq: Any = None
        ts: Any = None
        bids = asks = -1
        try:
            size = u.read_map_header()
        except ValueError:
            raise BusError("payload is not a map") from None
        for _ in range(size):
            k = u.unpack()
            if k == "bids" or k == "asks":
                n = _array_len(raw, u.tell())
                if n < 0:
                    raise BusError(f"{k!r} is not a list")
                u.skip()
                if k == "bids":
                    bids = n
                else:
                    asks = n
            elif k in _HEADER_KEYS:
                v = u.unpack()
                if k == "symbol":
                    symbol = v
                elif k == "epoch":
                    epoch = v
                elif k == "seq":
                    seq = v
                else:
                    ts = v
            elif type(k) is str:
                u.skip()
            else:
                raise BusError(f"map key {k!r} is not a string"[:120])
        if type(symbol) is not str:
            raise BusError(f"'symbol' is not a string: {symbol!r}"[:120])
        for key, v in (("epoch", epoch), ("seq", seq)):
            if type(v) is not int:
                raise BusError(f"{key!r} is not an int: {v!r}"[:120])
        expected = _topic_of(symbol)
        if expected is None:
            raise BusError("symbol is not ASCII")
        if topic != expected:
            raise BusError(f"topic {bytes(topic)[:60]!r} does not match payload {expected!r}")
        if bids < 0 or asks < 0:
            raise BusError("'bids'/'asks' are not lists")
        return symbol, epoch, seq, ts if type(ts) is int else None, bids, asks


def peek_merged_header(topic: bytes, payload: bytes) -> MergedHeader:
    """One message through a fresh :class:`MergedPeek` (a loop keeps one and calls its ``peek``)."""
    return MergedPeek().peek(topic, payload)


# --- latest endpoint (newest book per symbol on request) ------------------------------------------

#: Most symbols one latest request may name (and entries of its ``have``).
LATEST_MAX_SYMBOLS = 1000
#: Longest the publisher holds a latest request (seconds); a larger ``wait`` is cut to this.
LATEST_MAX_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class LatestRequest:
    """A decoded ``latest`` request (see the module docstring): ``symbols`` empty = every symbol."""

    id: int
    symbols: tuple[str, ...]
    have: dict[str, tuple[int, int]]
    wait: float


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """A decoded ``stats`` request."""

    id: int


def encode_latest_request(req: LatestRequest) -> bytes:
    return _pack({"t": "latest", "id": req.id, "s": list(req.symbols),
                  "have": {s: [e, q] for s, (e, q) in req.have.items()}, "wait": req.wait})


def encode_stats_request(req_id: int) -> bytes:
    return _pack({"t": "stats", "id": req_id})


def request_id(m: Any) -> int:
    """The ``id`` of a request map when it has a valid one, else 0 (for the error answer)."""
    v = m.get("id") if isinstance(m, dict) else None
    return v if type(v) is int and v >= 0 else 0


def decode_latest_request(raw: bytes) -> LatestRequest | StatsRequest:
    """One request frame -> :class:`LatestRequest` or :class:`StatsRequest`; :class:`BusError`
    naming the key when malformed or over the limits. O(symbols)."""
    m = unpack(raw)
    if not isinstance(m, dict):
        raise BusError("request is not a map")
    t = m.get("t")
    rid = _int(m, "id")
    if rid < 0:
        raise BusError("'id' is negative")
    if t == "stats":
        return StatsRequest(rid)
    if t != "latest":
        raise BusError(f"unknown request type {t!r}"[:120])
    syms = m.get("s", [])
    if not isinstance(syms, list) or not all(type(x) is str and 0 < len(x) <= 41 for x in syms):
        raise BusError("'s' is not a list of symbols")
    have_raw = m.get("have", {})
    if not isinstance(have_raw, dict):
        raise BusError("'have' is not a map of symbol -> [epoch, seq]")
    if len(syms) > LATEST_MAX_SYMBOLS or len(have_raw) > LATEST_MAX_SYMBOLS:
        raise BusError(f"more than {LATEST_MAX_SYMBOLS} symbols in 's' or 'have'")
    have: dict[str, tuple[int, int]] = {}
    for sym, pos in have_raw.items():
        if (not isinstance(pos, list) or len(pos) != 2 or not all(type(x) is int and x >= 0 for x in pos)):
            raise BusError(f"'have' of {sym!r} is not [epoch, seq]"[:120])
        have[sym] = (pos[0], pos[1])
    wait = m.get("wait", 0)
    if type(wait) not in (int, float) or not 0 <= wait < float("inf"):
        raise BusError(f"'wait' is not a number of seconds >= 0: {wait!r}"[:120])
    return LatestRequest(rid, tuple(dict.fromkeys(syms)), have, float(wait))


def encode_books_header(req_id: int, n: int) -> bytes:
    """Frame 0 of a latest answer carrying ``n`` books."""
    return _pack({"t": "books", "id": req_id, "n": n})


def encode_stats(req_id: int, waiting: int, books: Mapping[str, tuple[int, int]],
                 counters: Mapping[str, int]) -> bytes:
    return _pack({"t": "stats", "id": req_id, "waiting": waiting,
                  "books": {s: [e, q] for s, (e, q) in books.items()}, "counters": dict(counters)})


def encode_latest_error(req_id: int, error: str) -> bytes:
    return _pack({"t": "error", "id": req_id, "error": error[:200]})


@dataclass(frozen=True, slots=True)
class LatestAnswer:
    """A decoded answer of the latest endpoint: ``kind`` "books" (``books``: the ``[topic,
    payload]`` pairs, undecoded), "stats" (``info``: the map) or "error" (``error``)."""

    kind: str
    id: int
    books: list[list[bytes]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def decode_latest_answer(frames: Sequence[bytes]) -> LatestAnswer:
    """The frames of one answer (without the ROUTER envelope) -> :class:`LatestAnswer`;
    :class:`BusError` when the header or the frame count is wrong (the books themselves are
    checked by :func:`decode_merged` when taken)."""
    if not frames:
        raise BusError("empty answer")
    m = unpack(frames[0])
    if not isinstance(m, dict):
        raise BusError("answer header is not a map")
    t, rid = m.get("t"), _int(m, "id")
    if t == "books":
        n = _int(m, "n")
        if len(frames) != 1 + 2 * n:
            raise BusError(f"{len(frames)} frames for {n} books, expected {1 + 2 * n}")
        return LatestAnswer("books", rid, [[bytes(frames[i]), bytes(frames[i + 1])] for i in range(1, len(frames), 2)])
    if len(frames) != 1:
        raise BusError(f"{len(frames)} frames in a {t!r} answer, expected 1"[:120])
    if t == "stats":
        return LatestAnswer("stats", rid, info=m)
    if t == "error":
        return LatestAnswer("error", rid, error=str(m.get("error", ""))[:200])
    raise BusError(f"unknown answer type {t!r}"[:120])
