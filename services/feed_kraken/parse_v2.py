"""Kraken WebSocket v2 frames -> normalized values. Pure: no sockets, clock or state.

Book snapshot and update (``shared/exchanges.md`` §3; prices and quantities are unquoted JSON
numbers printed at the pair's precision, so they are decoded as the ``Decimal`` of their token
text, never as floats)::

    {"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",
      "bids":[{"price":45283.5,"qty":0.10000000}],"asks":[{"price":45285.2,"qty":0.00100000}],
      "checksum":3310070434}]}
    {"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],
      "asks":[{"price":29431.1,"qty":0.00000000}],"checksum":3547452596,
      "timestamp":"2023-07-30T15:29:58.343415Z"}]}

Other frames: ``{"channel":"status","type":"update","data":[{"system":"online",...}]}`` (MODE);
``{"channel":"instrument","type":"snapshot","data":{"assets":[...],"pairs":[{"symbol":"BTC/USD",
"price_precision":1,"qty_precision":8,"status":"online",...}]}}`` (one INSTRUMENT per pair);
``{"channel":"heartbeat"}`` and ``{"method":"pong",...}`` (HEARTBEAT); subscribe/unsubscribe acks
``{"method":"subscribe","result":{"channel":"book","symbol":"BTC/USD",...},"success":true}`` (ACK)
and refusals ``{"method":"subscribe","success":false,"error":"Currency pair not supported",
"symbol":"BTC/XYZ"}`` (SYMBOL_ERROR for that symbol, see :func:`wire.refusal`); other channels
(ticker, trade ...) are IGNOREd. Kraken has no update ids: ``first``/``last``/``Snapshot.last``
are 0. Every failure is a ParseError; one inside a book item names its symbol as ``key``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from common.feed.types import Control, ControlKind, DepthEvent, Frame, Levels, ParseError, Snapshot
from common.numbers import MAX_ABS, ZERO
from services.feed_kraken import wire

#: ``req_id`` of each request we send, so acks and refusals can be told apart in logs.
REQ_BOOK = 1
REQ_INSTRUMENT = 2
REQ_UNSUBSCRIBE = 3
REQ_PING = 4

#: Largest precision an INSTRUMENT may carry (more would be a malformed frame).
MAX_PRECISION = 18

PING = f'{{"method":"ping","req_id":{REQ_PING}}}'


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def subscribe_book(keys: list[str], depth: int, req_id: int = REQ_BOOK) -> str:
    """``{"method":"subscribe","params":{"channel":"book","symbol":[...],"depth":D,"snapshot":true}}``."""
    return _dumps({"method": "subscribe", "params": {"channel": "book", "symbol": list(keys), "depth": depth,
                                                     "snapshot": True}, "req_id": req_id})


def unsubscribe_book(keys: list[str], depth: int) -> str:
    return _dumps({"method": "unsubscribe", "params": {"channel": "book", "symbol": list(keys), "depth": depth},
                   "req_id": REQ_UNSUBSCRIBE})


def subscribe_instrument() -> str:
    """The ``instrument`` channel: every pair's ``price_precision``/``qty_precision``."""
    return _dumps({"method": "subscribe", "params": {"channel": "instrument", "snapshot": True},
                   "req_id": REQ_INSTRUMENT})


def _levels(v: Any, what: str, key: str) -> Levels:
    """``[{"price": p, "qty": q}, ...]`` -> ``[(price, qty)]``. Fast path (every level of a
    well-formed frame): both values short float tokens (plain ``Decimal``, at most
    ``MAX_DECIMALS`` decimals by construction, see :func:`wire.loads_exact`), price > 0, quantity
    >= 0, both <= ``MAX_ABS``: the same acceptance as :func:`wire.number`, inline. Anything else
    takes the checked path and its exact error."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise ParseError(f"{what} is not a list", key)
    out: Levels = []
    append = out.append
    for lvl in v:
        if type(lvl) is dict:
            price = lvl.get("price")
            qty = lvl.get("qty")
            if (type(price) is Decimal and type(qty) is Decimal
                    and ZERO < price <= MAX_ABS and ZERO <= qty <= MAX_ABS):
                append((price, qty))
                continue
        elif not isinstance(lvl, dict):
            raise ParseError(f"{what}: level is not an object: {str(lvl)[:60]}", key)
        price = wire.number(lvl.get("price"), f"{what} price", key)
        qty = wire.number(lvl.get("qty"), f"{what} qty", key)
        if not price:
            raise ParseError(f"{what}: price 0", key)
        append((price, qty))
    return out


def _book_item(typ: Any, item: Any) -> Snapshot | DepthEvent:
    key = item.get("symbol") if isinstance(item, dict) else None
    if not isinstance(key, str) or not key:
        raise ParseError("book item without a symbol")
    if typ not in ("snapshot", "update"):
        raise ParseError(f"book type {str(typ)[:30]!r}", key)
    bids = _levels(item.get("bids"), "bids", key)
    asks = _levels(item.get("asks"), "asks", key)
    ck = item.get("checksum")
    checksum = None if ck is None else wire.crc(ck, key)
    ts = item.get("timestamp")
    ets = 0 if ts is None else wire.rfc3339_ns(ts, key)
    if typ == "snapshot":
        return Snapshot(key, 0, ets, bids, asks, checksum)
    return DepthEvent(key, 0, 0, ets, bids, asks, checksum)


def _book(m: dict[str, Any]) -> Frame | list[Frame]:
    data = m.get("data")
    if not isinstance(data, list) or not data:
        raise ParseError("book 'data' is not a non-empty list")
    items: list[Frame] = [_book_item(m.get("type"), item) for item in data]
    return items[0] if len(items) == 1 else items


def _status(m: dict[str, Any]) -> Control:
    data = m.get("data")
    first = data[0] if isinstance(data, list) and data else None
    if not isinstance(first, dict) or not isinstance(first.get("system"), str) or not first["system"]:
        raise ParseError("status without a 'system' string")
    return Control(ControlKind.MODE, first["system"][:40], value=first.get("api_version"))


def _precision(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_PRECISION else None


def _instrument(m: dict[str, Any]) -> Frame | list[Frame]:
    data = m.get("data")
    if not isinstance(data, dict):
        raise ParseError("instrument 'data' is not an object")
    pairs = data.get("pairs")
    if pairs is None:
        return Control(ControlKind.IGNORE, "instrument without pairs")
    if not isinstance(pairs, list):
        raise ParseError("instrument 'pairs' is not a list")
    out: list[Frame] = []
    for p in pairs:
        if not isinstance(p, dict):
            continue
        sym, pp, qp = p.get("symbol"), _precision(p.get("price_precision")), _precision(p.get("qty_precision"))
        if not isinstance(sym, str) or not sym or pp is None or qp is None:
            continue  # a pair whose precision we cannot read: its checksum falls back to the wire text
        status = p.get("status")
        out.append(Control(ControlKind.INSTRUMENT, status[:40] if isinstance(status, str) else "", sym, (pp, qp)))
    return out or Control(ControlKind.IGNORE, "instrument without usable pairs")


def _method(m: dict[str, Any], method: str) -> Control:
    if method == "pong":
        return Control(ControlKind.HEARTBEAT, "pong")
    if method not in ("subscribe", "unsubscribe"):
        return Control(ControlKind.IGNORE, f"method {method[:30]}")
    result = m.get("result")
    result = result if isinstance(result, dict) else {}
    channel = result.get("channel")
    symbol = result.get("symbol", m.get("symbol"))
    if m.get("success") is True:
        key = symbol if channel == "book" and isinstance(symbol, str) and symbol else None
        return Control(ControlKind.ACK, f"{method} {str(channel)[:20]}", key)
    return wire.refusal(m.get("error"), symbol, method)


def parse_frame(text: str | bytes) -> Frame | list[Frame]:
    """One v2 text frame -> a Snapshot, a DepthEvent, a Control, or a list of them (a book frame
    with several items, an instrument frame with one INSTRUMENT per pair)."""
    m = wire.loads_exact(text)
    if not isinstance(m, dict):
        raise ParseError("frame is not an object")
    channel = m.get("channel")
    if channel == "book":
        return _book(m)
    if channel == "heartbeat":
        return Control(ControlKind.HEARTBEAT, "heartbeat")
    if channel == "status":
        return _status(m)
    if channel == "instrument":
        return _instrument(m)
    method = m.get("method")
    if isinstance(method, str):
        return _method(m, method)
    if isinstance(channel, str):
        return Control(ControlKind.IGNORE, channel[:40])
    if "error" in m:
        return Control(ControlKind.ERROR, str(m.get("error"))[:160])
    raise ParseError(f"unknown frame with keys {sorted(map(str, m))[:6]}")
