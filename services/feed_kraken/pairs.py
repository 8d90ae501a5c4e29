"""Kraken symbol names and the REST pair list (``/0/public/AssetPairs``), for both APIs. Pure.

Names (``shared/exchanges.md`` §3 and §6): canonical ``BTC/USD`` is ``BTC/USD`` on WebSocket v2,
``XBT/USD`` on v1 and in the REST ``wsname``; ``DOGE`` is ``XDG`` likewise. REST pair keys
(``XXBTZUSD``) and asset codes (``XXBT``, ``ZUSD``) are not used: ``wsname`` is the one REST field
that spells the pair the way the WebSocket does.

AssetPairs body (real, ``fixtures/recorded/kraken/KRAKEN.0``, trimmed)::

    {"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT",
     "quote":"ZUSD","pair_decimals":1,"lot_decimals":8,...,"status":"online"}}}

``status`` (absent in 2021, present today) is one of ``online``, ``cancel_only``, ``post_only``,
``limit_only``, ``reduce_only`` while the pair has a book; anything else (``delisted``,
``maintenance`` ...) means not trading. ``pair_decimals``/``lot_decimals`` are NOT the wire
precision (exchanges.md §3): they are not used for the checksum.
"""

from __future__ import annotations

from typing import Any

from common.feed.parsing import loads
from common.feed.types import PairInfo, ParseError

#: Kraken's legacy asset names (v1 WebSocket, REST wsname) -> the names of v2 and of bookmux.
V1_TO_CANONICAL = {"XBT": "BTC", "XDG": "DOGE"}
CANONICAL_TO_V1 = {v: k for k, v in V1_TO_CANONICAL.items()}

#: AssetPairs ``status`` values under which the pair has a live book.
TRADING_STATUSES = frozenset(("online", "cancel_only", "post_only", "limit_only", "reduce_only"))


def _map(symbol: str, table: dict[str, str]) -> str:
    base, sep, quote = symbol.partition("/")
    if not sep:
        return symbol
    return f"{table.get(base, base)}/{table.get(quote, quote)}"


def v1_name(symbol: str) -> str:
    """Canonical (or v2) ``BTC/USD`` -> v1 ``XBT/USD``; ``DOGE/USD`` -> ``XDG/USD``."""
    return _map(symbol.upper(), CANONICAL_TO_V1)


def v2_name(symbol: str) -> str:
    """Canonical ``BTC/USD`` -> v2 ``BTC/USD`` (the same text, upper-cased)."""
    return symbol.upper()


def canonical(wsname: str) -> str:
    """v1 / REST ``wsname`` ``XBT/USD`` (or a v2 name) -> canonical ``BTC/USD``."""
    return _map(wsname.upper(), V1_TO_CANONICAL)


def parse_asset_pairs(text: str | bytes, *, v1: bool) -> dict[str, PairInfo]:
    """AssetPairs -> ``{canonical: PairInfo(canonical, key, trading, status)}`` where ``key`` is
    the v1 name (``XBT/USD``) when ``v1`` else the v2 name (``BTC/USD``). Entries without a
    ``wsname`` (the ``.d`` dark-pool pairs) or not well-formed are skipped. A body with a
    non-empty ``error`` list and no ``result`` is a ParseError naming the error."""
    m = loads(text)
    if not isinstance(m, dict):
        raise ParseError("AssetPairs body is not an object")
    result = m.get("result")
    if not isinstance(result, dict):
        err = m.get("error")
        raise ParseError(f"AssetPairs has no 'result' object (error: {str(err)[:120]})")
    out: dict[str, PairInfo] = {}
    for entry in result.values():
        info = _pair(entry, v1)
        if info is not None:
            out[info.symbol] = info
    return out


def _pair(entry: Any, v1: bool) -> PairInfo | None:
    if not isinstance(entry, dict):
        return None
    ws = entry.get("wsname")
    if not isinstance(ws, str) or ws.count("/") != 1 or not all(ws.split("/")):
        return None
    status = entry.get("status", "online")
    if not isinstance(status, str):
        return None
    sym = canonical(ws)
    key = ws if v1 else v2_name(sym)
    return PairInfo(sym, key, status in TRADING_STATUSES, status)
