"""Coinbase Advanced Trade WebSocket frames -> normalized values. Pure: no sockets, clock or state.

Every message (``wss://advanced-trade-ws.coinbase.com``) has the same envelope; ``client_id`` is
optional (absent on the production feed)::

    {"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,
     "events":[{"type":"snapshot","product_id":"BTC-USD","updates":[
        {"side":"bid","event_time":"1970-01-01T00:00:00Z","price_level":"21921.73","new_quantity":"0.06317902"},
        {"side":"offer","event_time":"1970-01-01T00:00:00Z","price_level":"21921.74","new_quantity":"0.1"}]}]}

Later events of ``l2_data`` have ``"type":"update"``; ``new_quantity`` is the absolute size and
``"0"`` removes the level; sides are ``bid`` and ``offer``; one message may carry several events,
of several products. ``sequence_num`` counts every message of the connection, whatever its
channel, so :func:`parse_frame` returns ``[ConnSeq(sequence_num), *items]`` for every channel
message and the core checks it for +1 continuity. Other channels::

    {"channel":"subscriptions","timestamp":"..","sequence_num":1,
     "events":[{"subscriptions":{"level2":["BTC-USD"],"heartbeats":["heartbeats"]}}]}      -> ACK
    {"channel":"heartbeats","timestamp":"..","sequence_num":2,
     "events":[{"current_time":"2023-06-23 20:31:56.12 +0000 UTC m=+91717.5","heartbeat_counter":3049}]}
                                                                                            -> HEARTBEAT
    {"type":"error","message":"authentication failure"}      -> ERROR (no sequence_num)

Any other channel (``ticker``, ``market_trades``, ``status``, ...) is IGNORE after its ConnSeq.
Failures are :class:`~common.feed.types.ParseError`; a malformed event of one product is a
:class:`~services.feed_coinbase.wire.PartialParseError` naming that product and carrying what
still parsed (see there).
"""

from __future__ import annotations

from typing import Any

from common.feed.parsing import loads, nonneg_int
from common.feed.types import (
    ConnSeq,
    Control,
    ControlKind,
    DepthEvent,
    Frame,
    Levels,
    ParseError,
    Snapshot,
)
from common.numbers import BadNumber, parse_decimal
from services.feed_coinbase.wire import PartialParseError, product_id, rfc3339_ns

L2_CHANNEL = "l2_data"


def _updates(v: Any, key: str) -> tuple[Levels, Levels]:
    """An event's ``updates`` -> (bids, asks), in wire order."""
    if not isinstance(v, list):
        raise ParseError("updates is not a list", key)
    bids: Levels = []
    asks: Levels = []
    for u in v:
        if not isinstance(u, dict):
            raise ParseError(f"update is not an object: {str(u)[:60]}", key)
        side = u.get("side")
        if side == "bid":
            out = bids
        elif side == "offer":
            out = asks
        else:
            raise ParseError(f"update side is not 'bid' or 'offer': {str(side)[:20]!r}", key)
        try:
            price = parse_decimal(u.get("price_level"))
            qty = parse_decimal(u.get("new_quantity"))
        except BadNumber as e:
            raise ParseError(f"update price_level/new_quantity: {e}", key) from None
        if not price:
            raise ParseError("update price_level 0", key)
        out.append((price, qty))
    return bids, asks


def parse_l2_event(ev: Any, seq: int, ets: int) -> DepthEvent | Snapshot:
    """One ``l2_data`` event -> :class:`Snapshot` (``type`` snapshot; ``last`` 0: the venue numbers
    no book state) or :class:`DepthEvent` (``type`` update; ``first`` = ``last`` = the message's
    ``sequence_num``, for logs)."""
    if not isinstance(ev, dict):
        raise ParseError(f"l2_data event is not an object: {str(ev)[:60]}")
    key = product_id(ev.get("product_id"), "l2_data event product_id")
    kind = ev.get("type")
    bids, asks = _updates(ev.get("updates"), key)
    if kind == "snapshot":
        return Snapshot(key, 0, ets, bids, asks)
    if kind == "update":
        return DepthEvent(key, seq, seq, ets, bids, asks)
    raise ParseError(f"l2_data event type is not snapshot/update: {str(kind)[:20]!r}", key)


def _l2(m: dict[str, Any], seq: int) -> list[Frame]:
    events = m.get("events")
    if not isinstance(events, list):
        raise ParseError("l2_data events is not a list")
    ets = rfc3339_ns(m["timestamp"], "timestamp") if "timestamp" in m else 0
    out: list[Frame] = [ConnSeq(seq)]
    lost: list[tuple[str | None, str]] = []
    for ev in events:
        try:
            out.append(parse_l2_event(ev, seq, ets))
        except ParseError as e:
            lost.append((e.key, str(e)))
    if not lost:
        return out
    keys = {k for k, _ in lost}
    key, why = lost[0]
    if len(keys) == 1 and key is not None:
        # One product lost an event: the rest of the message (and the connection count) is good;
        # that product's other events of this message are left out too (it resyncs anyway).
        kept = [f for f in out if not isinstance(f, DepthEvent | Snapshot) or f.key != key]
        raise PartialParseError(f"l2_data {key}: {why}", key, kept)
    raise PartialParseError(f"l2_data: {len(lost)} malformed event(s) of {len(keys)} product(s): {why}", key)


def parse_frame(text: str | bytes) -> list[Frame] | Frame:
    """One WebSocket text frame -> ``[ConnSeq(n), ...]`` for channel messages (``n`` =
    ``sequence_num``), or a lone ERROR Control for ``{"type":"error"}``."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("frame is not an object")
    channel = m.get("channel")
    if not isinstance(channel, str):
        if m.get("type") == "error":
            return Control(ControlKind.ERROR, f"{str(m.get('message'))[:120]}"
                           + (f": {str(m.get('reason'))[:80]}" if m.get("reason") else ""))
        raise ParseError("frame has no 'channel' string")
    seq = nonneg_int(m.get("sequence_num"), "sequence_num")
    if channel == L2_CHANNEL:
        return _l2(m, seq)
    events = m.get("events")
    if channel == "heartbeats":
        ev = events[0] if isinstance(events, list) and events and isinstance(events[0], dict) else {}
        return [ConnSeq(seq), Control(ControlKind.HEARTBEAT, f"counter {str(ev.get('heartbeat_counter'))[:20]}")]
    if channel == "subscriptions":
        subs = {}
        for ev in events if isinstance(events, list) else []:
            if isinstance(ev, dict) and isinstance(ev.get("subscriptions"), dict):
                subs.update(ev["subscriptions"])
        return [ConnSeq(seq), Control(ControlKind.ACK, str(subs)[:160])]
    return [ConnSeq(seq), Control(ControlKind.IGNORE, channel[:40])]


def subscribe_frames(product_ids: list[str], channel: str = "level2") -> list[dict[str, Any]]:
    """The subscribe messages, one per channel (the venue takes one channel per message):
    ``level2`` for the products, then ``heartbeats`` (idle channels close after 60-90 s without
    it)."""
    return [{"type": "subscribe", "product_ids": product_ids, "channel": channel},
            {"type": "subscribe", "channel": "heartbeats"}]
