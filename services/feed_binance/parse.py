"""Binance spot frames and REST bodies -> normalized values. Pure: no sockets, clock or state.

Combined-stream diff event (the only book frame we use)::

    {"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512568,"s":"NKNUSDT",
     "U":499869753,"u":499869754,"b":[["0.35170000","4265.00000000"]],"a":[["0.35290000","10968.00000000"]]}}

REST depth: ``{"lastUpdateId":499869752,"bids":[["0.35210000","672.00000000"],...],"asks":[...]}``.
Symbols: ``BTC/USDT`` is ``BTCUSDT`` in REST and payloads (the event key) and ``btcusdt`` in
stream names. Every failure is a :class:`ParseError`; one that names a symbol's depth event
carries that symbol as ``key`` so the runner resyncs it.
"""

from __future__ import annotations

from typing import Any

from common.feed.parsing import levels, loads, nonneg_int
from common.feed.types import Control, ControlKind, DepthEvent, Frame, PairInfo, ParseError, Snapshot

#: Stream-name suffixes of the diff-depth stream (1000 ms default, or 100 ms).
DEPTH_SUFFIXES = frozenset(("depth", "depth@100ms", "depth@1000ms"))


def key_of(symbol: str) -> str:
    """``"BTC/USDT"`` -> ``"BTCUSDT"`` (REST symbol and event ``s``)."""
    return symbol.replace("/", "").upper()


def stream_of(key: str, speed: str = "100ms") -> str:
    """``"BTCUSDT"`` -> ``"btcusdt@depth@100ms"`` (``speed`` "" gives the 1000 ms stream)."""
    return f"{key.lower()}@depth@{speed}" if speed else f"{key.lower()}@depth"


def symbol_of(key: str, pairs: dict[str, PairInfo]) -> str | None:
    """``"BTCUSDT"`` -> ``"BTC/USDT"`` via the pair list (concatenated names are ambiguous)."""
    key = key.upper()
    for p in pairs.values():
        if p.key == key:
            return p.symbol
    return None


def parse_depth(data: Any, key_hint: str | None = None) -> DepthEvent:
    """A raw ``depthUpdate`` object -> :class:`DepthEvent` (``E`` ms -> ns)."""
    key = data.get("s") if isinstance(data, dict) else None
    key = key.upper() if isinstance(key, str) and key else key_hint
    if not isinstance(data, dict):
        raise ParseError("depth data is not an object", key)
    if data.get("e") != "depthUpdate":
        raise ParseError(f"depth stream event type {str(data.get('e'))[:30]!r}", key)
    if key is None:
        raise ParseError("depth event without a symbol")
    first = nonneg_int(data.get("U"), "U", key)
    last = nonneg_int(data.get("u"), "u", key)
    if first > last:
        raise ParseError(f"U {first} > u {last}", key)
    e_ms = nonneg_int(data.get("E", 0), "E", key)
    return DepthEvent(key, first, last, e_ms * 1_000_000,
                      levels(data.get("b"), "b", key), levels(data.get("a"), "a", key))


def parse_frame(text: str | bytes) -> Frame:
    """One WebSocket text frame -> :class:`DepthEvent` or :class:`Control`.

    Fast path: a combined-stream depth event whose fields already have their types (string
    ``s``, integers ``U`` <= ``u`` and ``E``, none a bool) is built here without the checked
    path's per-field calls; anything else goes through :func:`parse_depth` and its exact errors."""
    m = loads(text)
    if type(m) is not dict:
        raise ParseError("frame is not an object")
    data = m.get("data")
    if type(data) is dict and data.get("e") == "depthUpdate" and type(m.get("stream")) is str:
        key, first, last, e_ms = data.get("s"), data.get("U"), data.get("u"), data.get("E", 0)
        if (type(key) is str and key and type(first) is int and type(last) is int and type(e_ms) is int
                and 0 <= first <= last and e_ms >= 0 and m["stream"].partition("@")[2] in DEPTH_SUFFIXES):
            if not key.isupper():
                key = key.upper()
            return DepthEvent(key, first, last, e_ms * 1_000_000,
                              levels(data.get("b"), "b", key), levels(data.get("a"), "a", key))
    if "stream" in m:
        stream, data = m.get("stream"), m.get("data")
        if not isinstance(stream, str):
            raise ParseError("'stream' is not a string")
        name, _, suffix = stream.partition("@")
        if suffix in DEPTH_SUFFIXES:
            return parse_depth(data, name.upper() or None)
        if isinstance(data, dict) and data.get("e") == "serverShutdown":
            return Control(ControlKind.RECONNECT, "serverShutdown")
        return Control(ControlKind.IGNORE, stream[:60])
    e = m.get("e")
    if e == "depthUpdate":
        return parse_depth(m)
    if e == "serverShutdown":
        return Control(ControlKind.RECONNECT, "serverShutdown")
    if "result" in m and "id" in m:
        return Control(ControlKind.ACK, f"request id {str(m.get('id'))[:20]}")
    if "code" in m and "msg" in m:
        return Control(ControlKind.ERROR, f"code {str(m.get('code'))[:20]}: {str(m.get('msg'))[:120]}")
    if isinstance(e, str):
        return Control(ControlKind.IGNORE, e[:60])
    raise ParseError(f"unknown frame with keys {sorted(map(str, m))[:6]}")


def parse_snapshot(text: str | bytes, key: str) -> Snapshot:
    """REST ``/api/v3/depth`` body -> :class:`Snapshot` (Binance gives no timestamp: ``ets`` 0)."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("depth snapshot is not an object")
    if "code" in m and "lastUpdateId" not in m:
        raise ParseError(f"depth snapshot error: {str(m.get('code'))[:20]} {str(m.get('msg'))[:120]}")
    last = nonneg_int(m.get("lastUpdateId"), "lastUpdateId")
    return Snapshot(key, last, 0, levels(m.get("bids"), "bids"), levels(m.get("asks"), "asks"))


def parse_pairs(text: str | bytes) -> dict[str, PairInfo]:
    """REST ``/api/v3/exchangeInfo`` -> ``{"BTC/USDT": PairInfo(key="BTCUSDT", trading=...)}``;
    ``trading`` is ``status == "TRADING"``. Entries that are not well-formed are skipped."""
    m = loads(text)
    if not isinstance(m, dict) or not isinstance(m.get("symbols"), list):
        raise ParseError("exchangeInfo has no 'symbols' list")
    out: dict[str, PairInfo] = {}
    for s in m["symbols"]:
        if not isinstance(s, dict):
            continue
        key, base, quote, status = s.get("symbol"), s.get("baseAsset"), s.get("quoteAsset"), s.get("status")
        if not all(isinstance(x, str) and x for x in (key, base, quote)):
            continue
        status = status if isinstance(status, str) else ""
        sym = f"{base}/{quote}".upper()
        out[sym] = PairInfo(sym, str(key).upper(), status == "TRADING", status)
    return out
