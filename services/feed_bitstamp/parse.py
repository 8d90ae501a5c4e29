"""Bitstamp frames and REST bodies -> normalized values. Pure: no sockets, clock or state.

Diff frame (the only book frame we use)::

    {"data":{"timestamp":"1641343691","microtimestamp":"1641343691310202","bids":[],
     "asks":[["1.17438","853.01809477"],["1.17484","0.00000000"]]},
     "channel":"diff_order_book_adaeur","event":"data"}

REST ``/order_book/<pair>/``: ``{"timestamp":"..","microtimestamp":"1641343695572693","bids":[[p,a]..],"asks":..}``.
There is no sequence number: events are ordered by the integer ``microtimestamp`` (both ``first``
and ``last`` of a :class:`DepthEvent` hold it). Symbols: ``BTC/USD`` is ``btcusd``.
"""

from __future__ import annotations

import orjson

from common.feed.parsing import digits_int, levels, loads
from common.feed.types import Control, ControlKind, DepthEvent, Frame, PairInfo, ParseError, Snapshot

DIFF_PREFIX = "diff_order_book_"

SUBSCRIBE = "bts:subscribe"
HEARTBEAT = orjson.dumps({"event": "bts:heartbeat"}).decode()


def key_of(symbol: str) -> str:
    """``"BTC/USD"`` -> ``"btcusd"`` (Bitstamp's ``url_symbol``)."""
    return symbol.replace("/", "").lower()


def channel_of(key: str) -> str:
    return DIFF_PREFIX + key


def subscribe_frame(key: str) -> str:
    """``{"event":"bts:subscribe","data":{"channel":"diff_order_book_btcusd"}}``"""
    return orjson.dumps({"event": SUBSCRIBE, "data": {"channel": channel_of(key)}}).decode()


def parse_frame(text: str | bytes) -> Frame:
    """One WebSocket text frame -> :class:`DepthEvent` or :class:`Control`."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("frame is not an object")
    event = m.get("event")
    if not isinstance(event, str):
        raise ParseError("frame has no 'event' string")
    channel = m.get("channel")
    if event == "data" and isinstance(channel, str) and channel.startswith(DIFF_PREFIX):
        key = channel[len(DIFF_PREFIX):] or None
        if key is None:
            raise ParseError("diff frame for an empty pair")
        data = m.get("data")
        if not isinstance(data, dict):
            raise ParseError("diff 'data' is not an object", key)
        mt = data.get("microtimestamp")
        if not (type(mt) is str and 0 < len(mt) <= 19 and mt.isascii() and mt.isdigit()):
            mt = digits_int(mt, "microtimestamp", key)
        else:
            mt = int(mt)
        return DepthEvent(key, mt, mt, mt * 1000, levels(data.get("bids"), "bids", key),
                          levels(data.get("asks"), "asks", key))
    if event == "bts:subscription_succeeded":
        return Control(ControlKind.ACK, str(channel)[:60])
    if event == "bts:heartbeat":
        return Control(ControlKind.HEARTBEAT)
    if event == "bts:request_reconnect":
        return Control(ControlKind.RECONNECT, "bts:request_reconnect")
    if event == "bts:error":
        data = m.get("data")
        detail = (f"code {str(data.get('code'))[:20]}: {str(data.get('message'))[:120]}"
                  if isinstance(data, dict) else str(data)[:120])
        return Control(ControlKind.ERROR, detail)
    return Control(ControlKind.IGNORE, f"{event[:30]} {str(channel)[:40]}")


def parse_snapshot(text: str | bytes, key: str) -> Snapshot:
    """REST order book -> :class:`Snapshot` with ``last`` = its integer microtimestamp."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("order book is not an object")
    if m.get("status") == "error" or "microtimestamp" not in m:
        raise ParseError(f"order book error or no microtimestamp: {str(m)[:120]}")
    mt = digits_int(m.get("microtimestamp"), "microtimestamp")
    return Snapshot(key, mt, mt * 1000, levels(m.get("bids"), "bids"), levels(m.get("asks"), "asks"))


def parse_pairs(text: str | bytes) -> dict[str, PairInfo]:
    """REST ``/trading-pairs-info/`` -> ``{"BTC/USD": PairInfo(key="btcusd", trading=...)}``;
    ``trading`` is ``trading == "Enabled"``. Malformed entries are skipped."""
    m = loads(text)
    if not isinstance(m, list):
        raise ParseError("trading-pairs-info is not a list")
    out: dict[str, PairInfo] = {}
    for p in m:
        if not isinstance(p, dict):
            continue
        name, key, trading = p.get("name"), p.get("url_symbol"), p.get("trading")
        if not (isinstance(name, str) and "/" in name and isinstance(key, str) and key):
            continue
        status = trading if isinstance(trading, str) else ""
        sym = name.upper()
        out[sym] = PairInfo(sym, key.lower(), status == "Enabled", status)
    return out
