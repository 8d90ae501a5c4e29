"""Gemini market data v2 (``wss://api.gemini.com/v2/marketdata``) frames -> normalized values.
Pure: no sockets, clock or state.

Real frames (``shared/fixtures/recorded/gemini/GEMINI.ws.1.0``, 2021)::

    -> {"type":"subscribe","subscriptions":[{"name":"l2","symbols":["BTCGBP","LINKETH"]}]}
    <- {"type":"l2_updates","symbol":"ALCXUSD","changes":[["buy","302.75","0.00001"],...,
        ["sell","303.05","8.12974"],...],"trades":[{"type":"trade",...}],"auction_events":[]}
    <- {"type":"l2_updates","symbol":"FILUSD","changes":[["sell","58.4969","0"],["sell","58.4863","79.844211"]]}
    <- {"type":"trade","symbol":"FILUSD","event_id":45465842999,"timestamp":1624493681030,
        "price":"58.4998","quantity":"15.4053","side":"buy"}
    <- {"type":"heartbeat","timestamp":1624493666869}

The FIRST ``l2_updates`` of a symbol is its full book; only the presence of the ``trades`` /
``auction_events`` keys marks it (-> :class:`Snapshot`, the core replaces the book). Later ones
carry only ``changes`` (-> :class:`DepthEvent`): ``[side, price, qty]`` with side ``buy`` (bid) or
``sell`` (ask), qty absolute, ``"0"`` removes. There are no ids or exchange times on l2 messages
(``first``/``last``/``ets`` are 0). Trades, auctions and candles are valid but unused (IGNORE);
the venue's error answer ``{"result":"error","reason":..,"message":..}`` (or a ``type`` of
``error``) is an ERROR.
"""

from __future__ import annotations

from common.feed.parsing import loads, side_changes
from common.feed.types import Control, ControlKind, DepthEvent, Frame, ParseError, Snapshot

#: Keys whose presence marks the initial (full book) ``l2_updates`` of a symbol.
BOOK_MARKERS = ("trades", "auction_events")


def key_of(symbol: str) -> str:
    """``"BTC/USD"`` -> ``"BTCUSD"`` (v2 symbols are uppercase, no separator)."""
    return symbol.replace("/", "").upper()


def subscribe_frame(keys: list[str]) -> str:
    """The one ``l2`` subscription for ``keys``."""
    syms = ",".join(f'"{k}"' for k in keys)
    return f'{{"type":"subscribe","subscriptions":[{{"name":"l2","symbols":[{syms}]}}]}}'




def parse_frame(text: str | bytes) -> Frame:
    """One WebSocket text frame -> :class:`Snapshot` (a symbol's first ``l2_updates``),
    :class:`DepthEvent` (later ones) or :class:`Control`."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("frame is not an object")
    t = m.get("type")
    if t == "l2_updates":
        sym = m.get("symbol")
        if not isinstance(sym, str) or not sym or len(sym) > 40:
            raise ParseError(f"l2_updates without a symbol: {str(sym)[:40]}")
        key = sym.upper()
        bids, asks = side_changes(m.get("changes"), key)
        if any(k in m for k in BOOK_MARKERS):
            return Snapshot(key, 0, 0, bids, asks)
        return DepthEvent(key, 0, 0, 0, bids, asks)
    if t == "heartbeat":
        return Control(ControlKind.HEARTBEAT, "heartbeat")
    if m.get("result") == "error" or t == "error":
        return Control(ControlKind.ERROR, f"{str(m.get('reason'))[:40]}: {str(m.get('message'))[:120]}")
    if isinstance(t, str):
        return Control(ControlKind.IGNORE, t[:60])
    raise ParseError(f"unknown frame with keys {sorted(map(str, m))[:6]}")
