"""Depletion queries: the wire protocol between the aggregator's query endpoint and its clients.

Transport: the aggregator binds a ROUTER on ``aggregator.query`` (``tcp://127.0.0.1:50053`` in
``deploy/bookmux.toml``); clients connect a REQ (the CLI) or a DEALER (asynchronous tools). With
``[[aggregator.shards]]`` each aggregator process binds its own ``query`` and answers for its own
symbols only: a client sends each request to the shard owning the symbol (:func:`endpoint_for`).

Frame layout as the ROUTER sees it (and replies, with the same envelope)::

    from REQ      [identity, b"", request]     reply [identity, b"", reply]
    from DEALER   [identity, request]          reply [identity, reply]

More generally (:func:`split_envelope`): everything up to and including the first empty frame
after the identity is the envelope (so REQ sockets and proxies work), otherwise the envelope is the
identity alone; exactly one body frame must follow. The client sees only ``request`` / ``reply``.

Request: one msgpack map (at most :data:`MAX_REQUEST_BYTES` bytes)::

    key       type  required  meaning
    op        str   yes       "deplete"
    symbol    str   yes       canonical symbol, "BTC/USDT"
    side      str   yes       "buy" (takes asks) or "sell" (takes bids)
    quantity  str   one of    base units, decimal text > 0:   "15"
    notional  str   these     quote units, decimal text > 0:  "100000"
    venue     str   no        walk that venue's full book only (no merged walk)
    venues    str   no        "all": the merged book plus every venue's full book
    ver       int   no        QUERY_VERSION (1)

Numbers are decimal *strings* (ints, floats, NaN, infinities, negatives, zero, more than
:data:`MAX_DECIMALS` decimals or above :data:`common.numbers.MAX_ABS` are errors). Unknown keys are
errors (a typo must not silently change the answer).

Reply: one msgpack map::

    {"ok": true, "ver": 1, "epoch": int, "seq": int, "symbol": "BTC/USDT",
     "merged": <depletion map> | null,      # null when one venue was asked for
     "venues": {venue: <depletion map>},    # empty unless "venue" or "venues": "all"
     "statuses": {venue: "live" | "syncing" | "stale" | "down"}}

    {"ok": false, "ver": 1, "error": "<clear message>"}

``epoch``/``seq`` name the last published snapshot of the symbol; the merged walk agrees with it on
every level it shows (a change there makes a new ``seq``; one deeper does not, see
docs/depletion.md). The depletion map is
:meth:`services.aggregator.depletion.Depletion.to_wire`, documented in ``docs/depletion.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgpack

from common.config import SYMBOL_RE, VENUE_RE
from common.numbers import BadNumber, fmt, parse_decimal

QUERY_VERSION = 1
OP_DEPLETE = "deplete"
SIDES = ("buy", "sell")
ALL = "all"

# Limits
MAX_REQUEST_BYTES = 4096
MAX_REPLY_BYTES = 64 << 20
MAX_NUMBER_CHARS = 64

_KEYS = ("op", "symbol", "side", "quantity", "notional", "venue", "venues", "ver")


class QueryError(ValueError):
    """A malformed request or reply; the message says what is wrong and is sent to the client."""


class NoRoute(QueryError):
    """No aggregator process answers for the symbol (it is in no ``[[aggregator.shards]]``)."""


def endpoint_for(endpoints: str | Mapping[str, str], symbol: str) -> str:
    """The query endpoint that answers for ``symbol``. ``endpoints``: one endpoint (one aggregator,
    it answers for every symbol), or symbol -> endpoint when ``[[aggregator.shards]]`` split the
    symbols over several aggregators (``cfg.aggregator.query_routes()``). :class:`NoRoute` for a
    symbol the mapping lacks."""
    if isinstance(endpoints, str):
        return endpoints
    ep = endpoints.get(symbol.strip().upper())
    if ep is None:
        raise NoRoute(f"no aggregator shard answers for {symbol!r}; carried: {sorted(endpoints)}")
    return ep


@dataclass(frozen=True, slots=True)
class Request:
    """A validated depletion request: exactly one of ``quantity``/``notional`` is set (> 0);
    ``venue`` and ``all_venues`` are exclusive."""

    symbol: str
    side: str
    quantity: Decimal | None = None
    notional: Decimal | None = None
    venue: str | None = None
    all_venues: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply. When ``ok`` is false only ``error`` is meaningful."""

    ok: bool
    error: str | None = None
    epoch: int = 0
    seq: int = 0
    symbol: str = ""
    merged: dict[str, Any] | None = None
    venues: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(raw: bytes, what: str, limit: int) -> Any:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise QueryError(f"{what} is not bytes: {type(raw).__name__}")
    if len(raw) > limit:
        raise QueryError(f"{what} is {len(raw)} bytes, more than the limit of {limit}")
    try:
        return msgpack.unpackb(bytes(raw), raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises a family of errors (ExtraData, FormatError, ...)
        raise QueryError(f"{what} is not valid msgpack ({type(e).__name__})") from None


def _short(v: Any) -> str:
    return repr(v)[:60]


def _number(m: Mapping[str, Any], key: str) -> Decimal:
    v = m[key]
    if not isinstance(v, str):
        raise QueryError(f"{key} must be a decimal string like \"15\", got {type(v).__name__} {_short(v)}")
    if len(v) > MAX_NUMBER_CHARS:
        raise QueryError(f"{key} is longer than {MAX_NUMBER_CHARS} characters")
    try:
        d = parse_decimal(v.strip())
    except BadNumber as e:
        raise QueryError(f"{key}: {e}") from None
    if not d:
        raise QueryError(f"{key} must be > 0, got {_short(v)}")
    return d


def _text(m: Mapping[str, Any], key: str) -> str:
    v = m[key]
    if not isinstance(v, str):
        raise QueryError(f"{key} must be a string, got {type(v).__name__} {_short(v)}")
    return v


def check_request(m: Any) -> Request:
    """A decoded request map -> :class:`Request`, or :class:`QueryError` naming the problem."""
    if not isinstance(m, dict):
        raise QueryError(f"request must be a msgpack map, got {type(m).__name__}")
    if not all(isinstance(k, str) for k in m):
        raise QueryError("request keys must be strings")
    unknown = sorted(k for k in m if k not in _KEYS)
    if unknown:
        raise QueryError(f"unknown key(s) {[k[:30] for k in unknown[:5]]}; allowed: {list(_KEYS)}")
    if "ver" in m and (m["ver"] != QUERY_VERSION or isinstance(m["ver"], bool)):
        raise QueryError(f"query version {_short(m['ver'])} not supported; this is version {QUERY_VERSION}")
    for key in ("op", "symbol", "side"):
        if key not in m:
            raise QueryError(f"missing {key!r}")
    op = _text(m, "op")
    if op != OP_DEPLETE:
        raise QueryError(f"unknown op {_short(op)}; known: [{OP_DEPLETE!r}]")
    symbol = _text(m, "symbol")
    if not SYMBOL_RE.match(symbol):
        raise QueryError(f"symbol {_short(symbol)} is not of the form BASE/QUOTE (e.g. BTC/USDT)")
    side = _text(m, "side")
    if side not in SIDES:
        raise QueryError(f"unknown side {_short(side)}; use 'buy' (takes asks) or 'sell' (takes bids)")
    has_q, has_n = "quantity" in m, "notional" in m
    if has_q == has_n:
        raise QueryError("give exactly one of 'quantity' (base units) and 'notional' (quote units)"
                         + (", not both" if has_q else ""))
    quantity = _number(m, "quantity") if has_q else None
    notional = _number(m, "notional") if has_n else None
    venue = None
    if "venue" in m:
        venue = _text(m, "venue")
        if not VENUE_RE.match(venue):
            raise QueryError(f"venue {_short(venue)} is not a venue id (lowercase letters, digits, _)")
    all_venues = False
    if "venues" in m:
        if m["venues"] != ALL or not isinstance(m["venues"], str):
            raise QueryError(f"venues must be \"all\", got {_short(m['venues'])}")
        all_venues = True
    if venue is not None and all_venues:
        raise QueryError("give 'venue' or 'venues', not both")
    return Request(symbol, side, quantity, notional, venue, all_venues)


def parse_request(raw: bytes) -> Request:
    """One request frame -> :class:`Request`; every malformed case raises :class:`QueryError`
    with a message fit for the client. O(len(raw))."""
    return check_request(_unpack(raw, "request", MAX_REQUEST_BYTES))


def request_map(symbol: str, side: str, *, quantity: Decimal | str | None = None,
                notional: Decimal | str | None = None, venue: str | None = None,
                all_venues: bool = False) -> dict[str, Any]:
    """The request map (not validated: :func:`check_request` does that on both ends)."""
    m: dict[str, Any] = {"op": OP_DEPLETE, "symbol": symbol, "side": side}
    if quantity is not None:
        m["quantity"] = fmt(quantity) if isinstance(quantity, Decimal) else quantity
    if notional is not None:
        m["notional"] = fmt(notional) if isinstance(notional, Decimal) else notional
    if venue is not None:
        m["venue"] = venue
    if all_venues:
        m["venues"] = ALL
    return m


def encode_request(symbol: str, side: str, *, quantity: Decimal | str | None = None,
                   notional: Decimal | str | None = None, venue: str | None = None,
                   all_venues: bool = False) -> bytes:
    """A request frame. Validates first, so a client learns about a bad request without asking
    (:class:`QueryError`)."""
    m = request_map(symbol, side, quantity=quantity, notional=notional, venue=venue, all_venues=all_venues)
    check_request(m)
    return _pack(m)


def encode_reply(*, epoch: int, seq: int, symbol: str, merged: Mapping[str, Any] | None,
                 venues: Mapping[str, Mapping[str, Any]], statuses: Mapping[str, str]) -> bytes:
    """A successful reply frame (depletion maps as produced by ``Depletion.to_wire()``)."""
    return _pack({"ok": True, "ver": QUERY_VERSION, "epoch": epoch, "seq": seq, "symbol": symbol,
                  "merged": None if merged is None else dict(merged),
                  "venues": {v: dict(d) for v, d in venues.items()}, "statuses": dict(statuses)})


def encode_error(message: str) -> bytes:
    """An error reply frame."""
    return _pack({"ok": False, "ver": QUERY_VERSION, "error": message})


def decode_reply(raw: bytes) -> Reply:
    """A reply frame -> :class:`Reply`; a malformed reply raises :class:`QueryError`."""
    m = _unpack(raw, "reply", MAX_REPLY_BYTES)
    if not isinstance(m, dict) or not isinstance(m.get("ok"), bool):
        raise QueryError("reply is not a map with a boolean 'ok'")
    if not m["ok"]:
        err = m.get("error")
        return Reply(ok=False, error=err if isinstance(err, str) else repr(err), raw=m)
    epoch, seq, symbol = m.get("epoch"), m.get("seq"), m.get("symbol")
    merged, venues, statuses = m.get("merged"), m.get("venues"), m.get("statuses")
    if not (isinstance(epoch, int) and isinstance(seq, int) and isinstance(symbol, str)):
        raise QueryError("reply lacks epoch/seq/symbol")
    if not (merged is None or isinstance(merged, dict)) or not isinstance(venues, dict) \
            or not all(isinstance(d, dict) for d in venues.values()) or not isinstance(statuses, dict):
        raise QueryError("reply has malformed merged/venues/statuses")
    return Reply(ok=True, epoch=epoch, seq=seq, symbol=symbol, merged=merged, venues=venues,
                 statuses=statuses, raw=m)


def split_envelope(frames: Sequence[bytes]) -> tuple[list[bytes], bytes | None]:
    """ROUTER frames -> ``(envelope, body)``; ``body`` is None when there is not exactly one body
    frame (the caller replies with an error on the same envelope). See the module docstring."""
    frames = [bytes(f) for f in frames]
    if not frames:
        return [], None
    cut = 1
    for i in range(1, len(frames)):
        if not frames[i]:
            cut = i + 1
            break
    envelope, rest = frames[:cut], frames[cut:]
    return envelope, rest[0] if len(rest) == 1 else None
