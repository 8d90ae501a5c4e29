"""Small pure helpers the venue parsers share: JSON decoding and level lists, each failing with
:class:`~common.feed.types.ParseError` and nothing else."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from common.feed.types import Levels, ParseError
from common.numbers import MAX_ABS, MAX_DECIMALS, ZERO, BadNumber, parse_decimal


def loads(text: str | bytes) -> Any:
    """Decode JSON text; any failure (bad UTF-8, syntax, depth, integer size) is a ParseError."""
    if not isinstance(text, str | bytes | bytearray | memoryview):
        raise ParseError(f"frame is {type(text).__name__}, not text")
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError, ValueError) as e:
        raise ParseError(f"not JSON: {e}") from None


def levels(v: Any, what: str, key: str | None = None) -> Levels:
    """``[[price, qty], ...]`` (decimal strings) -> ``[(Decimal, Decimal)]``. Prices must be > 0;
    a zero quantity is kept (it removes the level); :func:`common.numbers.parse_decimal` refuses
    the rest (NaN, negative, huge, more than ``MAX_DECIMALS`` decimals). ``key`` goes into the
    ParseError.

    Fast path (every level of a well-formed frame): two short plain-text values are read with one
    ``Decimal()`` each and range-checked inline, the same acceptance as ``parse_decimal`` without
    its per-value call; anything else takes the checked path and its exact error."""
    if not isinstance(v, list):
        raise ParseError(f"{what} is not a list", key)
    out: Levels = []
    append = out.append
    for lvl in v:
        if type(lvl) is list and len(lvl) == 2:
            p, q = lvl
            if (type(p) is str and type(q) is str and len(p) <= MAX_DECIMALS and len(q) <= MAX_DECIMALS
                    and "e" not in p and "E" not in p and "e" not in q and "E" not in q):
                try:
                    price, qty = Decimal(p), Decimal(q)
                    ok = ZERO < price <= MAX_ABS and ZERO <= qty <= MAX_ABS
                except InvalidOperation:     # not a number, or NaN in a comparison
                    ok = False
                if ok:
                    append((price, qty))
                    continue
        append(_level(lvl, what, key))
    return out


def _level(lvl: Any, what: str, key: str | None) -> tuple[Decimal, Decimal]:
    """One level by the checked path (exact errors)."""
    if not isinstance(lvl, list) or len(lvl) != 2:
        raise ParseError(f"{what}: level is not [price, qty]: {str(lvl)[:60]}", key)
    try:
        price = parse_decimal(lvl[0])
        qty = parse_decimal(lvl[1])
    except BadNumber as e:
        raise ParseError(f"{what}: {e}", key) from None
    if not price:
        raise ParseError(f"{what}: price 0", key)
    return price, qty


def nonneg_int(v: Any, what: str, key: str | None = None) -> int:
    """A JSON integer >= 0 (not a bool, not a float)."""
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ParseError(f"{what} is not an integer >= 0: {str(v)[:40]}", key)
    return v


def digits_int(v: Any, what: str, key: str | None = None) -> int:
    """A decimal-digit string (or int) >= 0 with at most 19 digits, as Bitstamp sends times."""
    if isinstance(v, str):
        if not (0 < len(v) <= 19 and v.isascii() and v.isdigit()):
            raise ParseError(f"{what} is not a digit string: {v[:40]!r}", key)
        return int(v)
    n = nonneg_int(v, what, key)
    if n >= 10**19:
        raise ParseError(f"{what} too large", key)
    return n


def side_changes(v: Any, key: str | None = None) -> tuple[Levels, Levels]:
    """``[["buy"|"sell", price, qty], ...]`` (Coinbase Exchange ``changes``, Gemini v2
    ``changes``) -> ``(bids, asks)`` in wire order; prices > 0, quantities >= 0 (0 removes), exact
    decimals. Anything else is a ParseError naming ``key``."""
    if not isinstance(v, list):
        raise ParseError("changes is not a list", key)
    bids: Levels = []
    asks: Levels = []
    for ch in v:
        if not isinstance(ch, list) or len(ch) != 3:
            raise ParseError(f"change is not [side, price, qty]: {str(ch)[:60]}", key)
        side, p, q = ch
        if side == "buy":
            out = bids
        elif side == "sell":
            out = asks
        else:
            raise ParseError(f"change side {str(side)[:20]!r} is not buy/sell", key)
        try:
            price, qty = parse_decimal(p), parse_decimal(q)
        except BadNumber as e:
            raise ParseError(f"changes: {e}", key) from None
        if not price:
            raise ParseError("changes: price 0", key)
        out.append((price, qty))
    return bids, asks
