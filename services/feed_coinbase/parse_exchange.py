"""Coinbase Exchange WebSocket frames (``wss://ws-feed.exchange.coinbase.com``, channels
``level2_batch`` or ``level2``, and ``heartbeat``) -> normalized values. Pure: no sockets, clock
or state.

Book frames (real, from the recording ``COINBASE.ws.28.0``)::

    {"type":"snapshot","product_id":"BAND-GBP","asks":[["14.8024","12.77"],...],"bids":[["14.7693","3.63"],...]}
    {"type":"l2update","product_id":"SKL-BTC","changes":[["sell","0.00001306","660.5"]],
     "time":"2021-04-17T16:43:37.075687Z"}

``changes`` are ``[side, price, size]`` with side ``buy`` (bids) or ``sell`` (asks); ``size`` is
absolute and zero removes the level (spelled ``"0"``, ``"0.0"``, ``"0.00"``, ``"0.00000000"`` ...:
they are compared as decimals, never as text). l2 messages carry **no sequence number**: a lost
update cannot be seen here, so the core resyncs on reconnect, a crossed book and silence.
Controls: ``subscriptions`` -> ACK; ``heartbeat`` -> HEARTBEAT; ``error`` -> ERROR, or
SYMBOL_ERROR when its reason is ``"<PRODUCT> is not a valid product"`` (the venue then ignores
that whole subscribe message, so the other products of it get no snapshot either: the core's
snapshot timeout resubscribes each of them on its own); every other type (``ticker``, ``match``,
``last_match``, ``status`` ...) -> IGNORE. Failures are
:class:`~common.feed.types.ParseError`, naming the product when the frame was one's book data.
"""

from __future__ import annotations

import re
from typing import Any

from common.feed.parsing import levels, loads, side_changes
from common.feed.types import Control, ControlKind, DepthEvent, Frame, ParseError, Snapshot
from services.feed_coinbase.wire import product_id, rfc3339_ns

_NOT_VALID = re.compile(r"^([A-Za-z0-9]{1,20}-[A-Za-z0-9]{1,20}) is not a valid product")




def parse_frame(text: str | bytes) -> Frame:
    """One WebSocket text frame -> :class:`Snapshot`, :class:`DepthEvent` (``first`` = ``last`` =
    0: there is no id) or :class:`Control`."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("frame is not an object")
    kind = m.get("type")
    if not isinstance(kind, str):
        raise ParseError("frame has no 'type' string")
    if kind == "l2update":
        key = product_id(m.get("product_id"), "l2update product_id")
        ets = rfc3339_ns(m["time"], "time", key) if "time" in m else 0
        bids, asks = side_changes(m.get("changes"), key)
        return DepthEvent(key, 0, 0, ets, bids, asks)
    if kind == "snapshot":
        key = product_id(m.get("product_id"), "snapshot product_id")
        ets = rfc3339_ns(m["time"], "time", key) if "time" in m else 0
        return Snapshot(key, 0, ets, levels(m.get("bids"), "bids", key), levels(m.get("asks"), "asks", key))
    if kind == "heartbeat":
        return Control(ControlKind.HEARTBEAT, str(m.get("product_id"))[:30])
    if kind == "subscriptions":
        return Control(ControlKind.ACK, str(m.get("channels"))[:160])
    if kind == "error":
        msg, reason = str(m.get("message"))[:120], m.get("reason")
        detail = f"{msg}: {str(reason)[:120]}" if reason else msg
        hit = _NOT_VALID.match(reason) if isinstance(reason, str) else None
        if hit:
            return Control(ControlKind.SYMBOL_ERROR, detail, key=hit.group(1).upper())
        return Control(ControlKind.ERROR, detail)
    return Control(ControlKind.IGNORE, kind[:30])


def subscribe_frame(product_ids: list[str], channel: str = "level2_batch") -> dict[str, Any]:
    """``{"type":"subscribe","product_ids":[..],"channels":["level2_batch","heartbeat"]}``"""
    return {"type": "subscribe", "product_ids": product_ids, "channels": [channel, "heartbeat"]}
