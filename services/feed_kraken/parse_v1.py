"""Kraken WebSocket v1 frames -> normalized values. Pure: no sockets, clock or state.

Book messages are arrays ``[channelID, payload..., channelName, pair]`` (real, recorded in
``fixtures/recorded/kraken/KRAKEN.ws.50.0``)::

    [1360,{"as":[["0.000022900","13355.87450757","1618678123.481570"],...],"bs":[...]},"book-1000","ADA/XBT"]
    [992,{"b":[["354.15000000","5.00000000","1618678133.365913"]],"c":"2583817756"},"book-1000","XMR/USD"]
    [1920,{"a":[["0.042990","364630.28272081","1618678145.920470"]]},
          {"b":[["0.042990","0.00000000","1618678145.920708"]],"c":"4105471083"},"book-1000","SC/EUR"]

A snapshot (``as``/``bs``) carries no checksum; an update carries ``a`` and/or ``b`` (in one dict or
two) and the checksum ``c`` (a quoted integer). Levels are ``[price, volume, time]`` with quoted
fixed-decimal text, plus a 4th element ``"r"`` on a *republished* level (one that came back into
the subscribed depth): it is applied like any other. Levels of one side keep their array order;
the book applies them in that order. Volume 0 deletes.

Events (objects): ``systemStatus`` (MODE: ``online`` / ``maintenance`` / ``cancel_only`` /
``post_only`` / ``limit_only``), ``subscriptionStatus`` (ACK, or SYMBOL_ERROR/ERROR when
``status`` is ``error``), ``heartbeat`` and ``pong`` (HEARTBEAT), ``error`` (ERROR). Arrays of
other channels (ticker, trade, spread) are IGNOREd. The key of a book event is the v1 pair name
(``XBT/USD``). Every failure is a ParseError; one in a book array names its pair as ``key``.
"""

from __future__ import annotations

import json
from typing import Any

from common.feed.parsing import loads
from common.feed.types import Control, ControlKind, DepthEvent, Frame, Levels, ParseError, Snapshot
from services.feed_kraken import wire

#: ``reqid`` of each request we send; Kraken echoes it in the answer, which tells a refused
#: unsubscribe (harmless) from a refused subscribe.
REQ_BOOK = 1
REQ_UNSUBSCRIBE = 3
REQ_PING = 4

PING = f'{{"event":"ping","reqid":{REQ_PING}}}'


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def subscribe_book(keys: list[str], depth: int) -> str:
    """``{"event":"subscribe","reqid":1,"pair":[...],"subscription":{"name":"book","depth":D}}``."""
    return _dumps({"event": "subscribe", "reqid": REQ_BOOK, "pair": list(keys),
                   "subscription": {"name": "book", "depth": depth}})


def unsubscribe_book(keys: list[str], depth: int) -> str:
    return _dumps({"event": "unsubscribe", "reqid": REQ_UNSUBSCRIBE, "pair": list(keys),
                   "subscription": {"name": "book", "depth": depth}})


def _levels(v: Any, what: str, key: str) -> tuple[Levels, int]:
    """``[[price, volume, time(, "r")], ...]`` -> levels in array order, and the latest time (ns)."""
    if not isinstance(v, list):
        raise ParseError(f"{what} is not a list", key)
    out: Levels = []
    ets = 0
    for lvl in v:
        if not isinstance(lvl, list) or not 3 <= len(lvl) <= 4 or (len(lvl) == 4 and not isinstance(lvl[3], str)):
            raise ParseError(f"{what}: level is not [price, volume, time(, flag)]: {str(lvl)[:60]}", key)
        if not isinstance(lvl[0], str) or not isinstance(lvl[1], str):
            raise ParseError(f"{what}: price and volume must be decimal strings: {str(lvl)[:60]}", key)
        price = wire.number(lvl[0], f"{what} price", key)
        qty = wire.number(lvl[1], f"{what} volume", key)
        if not price:
            raise ParseError(f"{what}: price 0", key)
        ets = max(ets, wire.epoch_ns(lvl[2], key))
        out.append((price, qty))
    return out, ets


def _book(m: list[Any], key: str) -> Snapshot | DepthEvent:
    payloads = m[1:-2]
    if not 1 <= len(payloads) <= 2 or not all(isinstance(p, dict) for p in payloads):
        raise ParseError("book message needs one or two payload objects", key)
    if any("as" in p or "bs" in p for p in payloads):
        if len(payloads) != 1:
            raise ParseError("book snapshot with two payloads", key)
        p = payloads[0]
        asks, ta = _levels(p.get("as", []), "as", key)
        bids, tb = _levels(p.get("bs", []), "bs", key)
        return Snapshot(key, 0, max(ta, tb), bids, asks)
    bids, asks, ets, checksum = [], [], 0, None
    for p in payloads:
        if "a" not in p and "b" not in p:
            raise ParseError("book update payload without 'a' or 'b'", key)
        if "a" in p:
            lv, t = _levels(p["a"], "a", key)
            asks.extend(lv)
            ets = max(ets, t)
        if "b" in p:
            lv, t = _levels(p["b"], "b", key)
            bids.extend(lv)
            ets = max(ets, t)
        if "c" in p:
            checksum = wire.crc(p["c"], key)
    return DepthEvent(key, 0, 0, ets, bids, asks, checksum)


def _array(m: list[Any]) -> Frame:
    if len(m) < 4:
        raise ParseError(f"channel message of {len(m)} elements")
    name, pair = m[-2], m[-1]
    key = pair if isinstance(pair, str) and pair else None
    if not isinstance(name, str) or key is None:
        raise ParseError("channel message without a channel name and a pair", key)
    if not name.startswith("book"):
        return Control(ControlKind.IGNORE, name[:40])
    return _book(m, key)


def _event(m: dict[str, Any], event: str) -> Control:
    if event in ("heartbeat", "pong"):
        return Control(ControlKind.HEARTBEAT, event)
    if event == "systemStatus":
        status = m.get("status")
        if not isinstance(status, str) or not status:
            raise ParseError("systemStatus without a 'status' string")
        return Control(ControlKind.MODE, status[:40], value=m.get("version"))
    if event == "subscriptionStatus":
        status, pair = m.get("status"), m.get("pair")
        if status in ("subscribed", "unsubscribed"):
            key = pair if isinstance(pair, str) and pair else None
            return Control(ControlKind.ACK, f"{status} {str(m.get('channelName'))[:20]}", key)
        if status == "error":
            sub = m.get("subscription")
            what = "unsubscribe" if m.get("reqid") == REQ_UNSUBSCRIBE else "subscribe"
            if isinstance(sub, dict) and sub.get("name") not in (None, "book"):
                what = f"subscribe {str(sub.get('name'))[:20]}"
            return wire.refusal(m.get("errorMessage"), pair, what)
        raise ParseError(f"subscriptionStatus with status {str(status)[:30]!r}")
    if event == "error":
        return Control(ControlKind.ERROR, str(m.get("errorMessage"))[:160])
    return Control(ControlKind.IGNORE, event[:40])


def parse_frame(text: str | bytes) -> Frame:
    """One v1 text frame -> a Snapshot, a DepthEvent or a Control."""
    m = loads(text)
    if isinstance(m, list):
        return _array(m)
    if isinstance(m, dict):
        event = m.get("event")
        if isinstance(event, str):
            return _event(m, event)
    raise ParseError("frame is neither a channel array nor an event object")
