"""Gemini's current WebSocket API (``wss://ws.gemini.com``) frames -> normalized values. Pure: no
sockets, clock or state.

Connect with ``?snapshot=-1``: then the first ``depthUpdate`` of each symbol after connecting is
its full book, and later ones are diffs (which is which is the sequencer's business, not the
parser's: the frames look alike). Documented shapes (no real capture exists)::

    -> {"id":1,"method":"SUBSCRIBE","params":["btcusd@depth@100ms","ethusd@depth@100ms"]}
    <- {"id":1,"status":200,"result":null}
    <- {"id":1,"status":400,"error":{"code":-1013,"msg":"Invalid parameters"}}
    <- {"e":"depthUpdate","E":1751508438600117161,"s":"btcusd","U":100,"u":105,
        "b":[["45000.50","1.25000000"]],"a":[["45001.00","0"]]}

``E`` is the event time in nanoseconds, ``s`` the lowercase symbol (our key: ``BTC/USD`` ->
``btcusd``), ``U``/``u`` the first and last update id in the event, ``b``/``a`` absolute
``[price, qty]`` strings where qty 0 removes the level. ``@bookTicker`` and partial-depth frames
are valid but unused (IGNORE). Every failure is a :class:`ParseError`; one inside a symbol's
depth event carries that symbol as ``key`` so the core resyncs it.
"""

from __future__ import annotations

import re
from typing import Any

from common.feed.parsing import levels, loads, nonneg_int
from common.feed.types import Control, ControlKind, DepthEvent, Frame, ParseError

#: Stream-name suffixes of the differential depth stream (1 s, or 100 ms).
DEPTH_SUFFIXES = frozenset(("depth", "depth@100ms"))
#: A symbol named in an error message: ``btcusd@depth@100ms`` or ``symbol: FOOUSD``.
_STREAM_IN_MSG = re.compile(r"\b([A-Za-z0-9]{2,40})@depth")
_SYMBOL_IN_MSG = re.compile(r"\bsymbol\s*[:=]\s*['\"]?([A-Za-z0-9]{2,40})\b", re.IGNORECASE)


def key_of(symbol: str) -> str:
    """``"BTC/USD"`` -> ``"btcusd"`` (stream names and the event's ``s``)."""
    return symbol.replace("/", "").lower()


def stream_of(key: str, speed: str = "100ms") -> str:
    """``"btcusd"`` -> ``"btcusd@depth@100ms"`` (``speed`` "" gives the 1 s stream)."""
    return f"{key}@depth@{speed}" if speed else f"{key}@depth"


def subscribe_frame(keys: list[str], req_id: int = 1, speed: str = "100ms") -> str:
    """The SUBSCRIBE request for the depth streams of ``keys``."""
    params = ",".join(f'"{stream_of(k, speed)}"' for k in keys)
    return f'{{"id":{req_id},"method":"SUBSCRIBE","params":[{params}]}}'


def parse_depth(data: Any, key_hint: str | None = None) -> DepthEvent:
    """A raw ``depthUpdate`` object -> :class:`DepthEvent` (``E`` is already ns)."""
    key = data.get("s") if isinstance(data, dict) else None
    key = key.lower() if isinstance(key, str) and key else key_hint
    if not isinstance(data, dict):
        raise ParseError("depth data is not an object", key)
    if key is None:
        raise ParseError("depth event without a symbol")
    first = nonneg_int(data.get("U"), "U", key)
    last = nonneg_int(data.get("u"), "u", key)
    if first > last:
        raise ParseError(f"U {first} > u {last}", key)
    ets = nonneg_int(data.get("E", 0), "E", key)
    if ets >= 2**63:
        raise ParseError(f"E too large: {ets}", key)
    return DepthEvent(key, first, last, ets, levels(data.get("b"), "b", key), levels(data.get("a"), "a", key))


def _error(m: dict[str, Any]) -> Control:
    """A ``status`` >= 400 answer: SYMBOL_ERROR when its message names a symbol, else ERROR."""
    err = m.get("error")
    code, msg = (err.get("code"), err.get("msg")) if isinstance(err, dict) else (None, err)
    msg = str(msg)[:160] if msg is not None else ""
    detail = f"status {str(m.get('status'))[:5]} code {str(code)[:12]}: {msg}"
    hit = _STREAM_IN_MSG.search(msg) or _SYMBOL_IN_MSG.search(msg)
    if hit:
        return Control(ControlKind.SYMBOL_ERROR, detail, key=hit.group(1).lower())
    return Control(ControlKind.ERROR, detail)


def parse_frame(text: str | bytes) -> Frame:
    """One WebSocket text frame -> :class:`DepthEvent` or :class:`Control`."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("frame is not an object")
    e = m.get("e")
    if e == "depthUpdate":
        return parse_depth(m)
    if "stream" in m and "data" in m:  # a combined-stream wrapper, should the venue use one
        stream, data = m.get("stream"), m.get("data")
        if not isinstance(stream, str):
            raise ParseError("'stream' is not a string")
        name, _, suffix = stream.partition("@")
        if suffix in DEPTH_SUFFIXES:
            if isinstance(data, dict) and data.get("e") not in (None, "depthUpdate"):
                raise ParseError(f"depth stream event type {str(data.get('e'))[:30]!r}", name.lower() or None)
            return parse_depth(data, name.lower() or None)
        return Control(ControlKind.IGNORE, stream[:60])
    if "status" in m and "id" in m:
        status = m.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            raise ParseError(f"'status' is not an integer: {str(status)[:20]}")
        if 200 <= status < 300:
            return Control(ControlKind.ACK, f"request id {str(m.get('id'))[:20]}")
        return _error(m)
    if isinstance(e, str):
        return Control(ControlKind.IGNORE, e[:60])
    if "lastUpdateId" in m or ("b" in m and "a" in m and "u" in m):  # partial depth, book ticker
        return Control(ControlKind.IGNORE, "partial depth or book ticker")
    raise ParseError(f"unknown frame with keys {sorted(map(str, m))[:6]}")
