"""Wire helpers both Coinbase APIs share: product ids, RFC 3339 times, the product lists, and the
error a multi-event message raises when only part of it is malformed. Pure: no I/O, no state.

Product ids are ``BASE-QUOTE`` on both APIs (``BTC/USD`` <-> ``BTC-USD``). Pair lists:

* Exchange ``GET /products`` -> ``[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD",
  "status":"online","trading_disabled":false,...}, ...]`` (a real one is in the recording's
  ``COINBASE.0``);
* Advanced Trade ``GET /api/v3/brokerage/market/products`` (public, no auth) ->
  ``{"products":[{"product_id":"BTC-USD","status":"online","trading_disabled":false,
  "is_disabled":false,...}],"num_products":1}``; the per-product endpoint
  ``/api/v3/brokerage/market/products/BTC-USD`` answers one such product object.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from typing import Any

from common.feed.parsing import loads
from common.feed.types import Frame, PairInfo, ParseError

_PRODUCT_RE = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")
_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


class PartialParseError(ParseError):
    """A frame with several items of which some are malformed (one Advanced Trade message carries
    events of several products). ``key`` is the product whose event was lost (resync it);
    ``frames`` are the items that still parsed, ``ConnSeq`` first, for a core that can use them
    (keeping the connection count, applying the other products' events). ``frames`` is empty
    when more than one product lost an event: then the missing ``ConnSeq`` makes the next
    message look like a jump, and the whole connection resyncs, as it must.

    A core that only knows :class:`ParseError` resyncs ``key`` and, on the next message, sees the
    jump and reconnects: correct, only slower."""

    def __init__(self, message: str, key: str | None, frames: Sequence[Frame] = ()) -> None:
        super().__init__(message, key, frames)


def key_of(symbol: str) -> str:
    """``"BTC/USD"`` -> ``"BTC-USD"`` (the product id of both APIs)."""
    return symbol.upper().replace("/", "-")


def symbol_of(product_id: str) -> str | None:
    """``"BTC-USD"`` -> ``"BTC/USD"``; None for ids that are not ``BASE-QUOTE`` (futures such as
    ``BIT-28JUL23-CDE``)."""
    pid = product_id.upper()
    return pid.replace("-", "/") if _PRODUCT_RE.match(pid) else None


def product_id(v: Any, what: str = "product_id") -> str:
    """A non-empty product id string (the ParseError names no key: there is none to name)."""
    if not isinstance(v, str) or not v or len(v) > 64:
        raise ParseError(f"{what} is not a product id: {str(v)[:40]!r}")
    return v


def rfc3339_ns(v: Any, what: str, key: str | None = None) -> int:
    """``"2021-04-17T16:43:37.075687Z"`` (up to 9 decimals, ``Z`` or an offset) -> Unix time in
    ns, exact (no float). ParseError (naming ``key``) for anything else."""
    m = _TIME_RE.match(v) if isinstance(v, str) else None
    if m is None:
        raise ParseError(f"{what} is not an RFC 3339 time: {str(v)[:40]!r}", key)
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) <= 23 and int(mi) <= 59 and int(s) <= 60):
        raise ParseError(f"{what} is out of range: {v[:40]!r}", key)
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if tz != "Z":
        off = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        secs -= off if tz[0] == "+" else -off
    ns = secs * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    return max(ns, 0)


def _trading(status: Any, *disabled: Any) -> bool:
    return status == "online" and not any(x is True for x in disabled)


def parse_exchange_products(text: str | bytes) -> dict[str, PairInfo]:
    """Exchange ``/products`` -> ``{"BTC/USD": PairInfo("BTC/USD", "BTC-USD", trading, status)}``;
    ``trading`` is ``status == "online"`` and not ``trading_disabled``. Entries that are not
    ``BASE-QUOTE`` products are skipped."""
    m = loads(text)
    if not isinstance(m, list):
        raise ParseError("products is not a list")
    out: dict[str, PairInfo] = {}
    for p in m:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str):
            continue
        sym = symbol_of(p["id"])
        if sym is None:
            continue
        status = p.get("status")
        out[sym] = PairInfo(sym, p["id"].upper(), _trading(status, p.get("trading_disabled")),
                            status if isinstance(status, str) else "")
    return out


def parse_advanced_products(text: str | bytes) -> dict[str, PairInfo]:
    """Advanced Trade public products -> ``{"BTC/USD": PairInfo(...)}``. Accepts the list
    (``{"products":[...]}``) and the per-product answer (one product object). ``trading`` is
    ``status == "online"`` and neither ``trading_disabled`` nor ``is_disabled``."""
    m = loads(text)
    if isinstance(m, dict) and isinstance(m.get("products"), list):
        items = m["products"]
    elif isinstance(m, dict) and "product_id" in m:
        items = [m]
    else:
        raise ParseError(f"not a product list or a product: {str(m)[:80]}")
    out: dict[str, PairInfo] = {}
    for p in items:
        if not isinstance(p, dict) or not isinstance(p.get("product_id"), str):
            continue
        sym = symbol_of(p["product_id"])
        if sym is None:
            continue
        status = p.get("status")
        out[sym] = PairInfo(sym, p["product_id"].upper(),
                            _trading(status, p.get("trading_disabled"), p.get("is_disabled")),
                            status if isinstance(status, str) else "")
    return out
