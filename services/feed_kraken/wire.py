"""Small pure helpers both Kraken parsers share: exact JSON decoding (v2 numbers), wire values
(checksums, times, levels) and how to read a refused subscription. Every failure is a
:class:`~common.feed.types.ParseError` (with the symbol as ``key`` when the caller knows it)."""

from __future__ import annotations

import calendar
import json
import re
from decimal import Decimal
from typing import Any

import msgspec

from common.feed.types import Control, ControlKind, ParseError
from common.numbers import MAX_DECIMALS, BadNumber, decimals, parse_decimal

#: Kraken's CRC32 is an unsigned 32-bit value.
CRC_MAX = 2**32 - 1

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z\Z", re.ASCII)


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not a number Kraken sends")


class WideDecimal(Decimal):
    """The ``Decimal`` of a JSON float token longer than :data:`SHORT_TOKEN` characters or written
    with an exponent: the only tokens that can carry more than ``MAX_DECIMALS`` decimals, so the
    only ones :func:`number` must count the decimals of (it returns a plain ``Decimal``)."""

    __slots__ = ()


#: A JSON float token this long at most, without an exponent, has at most ``MAX_DECIMALS``
#: decimals (JSON writes at least one digit and the point before them).
SHORT_TOKEN = MAX_DECIMALS + 2


def _float_token(s: str) -> Decimal:
    if len(s) <= SHORT_TOKEN and "e" not in s and "E" not in s:
        return Decimal(s)
    return WideDecimal(s)


_decode_fast = msgspec.json.Decoder(float_hook=_float_token).decode


def loads_exact(text: str | bytes) -> Any:
    """Decode JSON keeping every non-integer number as the ``Decimal`` of its token text
    (``0.10000000`` stays ``Decimal("0.10000000")``: a float would drop the zeros Kraken's
    checksum is computed over). Integers stay ``int``. ``NaN``/``Infinity``, bad UTF-8, bad
    syntax, too-deep nesting, integers too long to convert and exponents out of Decimal's range
    are all a ParseError.

    Decoded by msgspec (~3x cheaper than the standard library's decoder with a Decimal hook);
    whatever it refuses goes to the standard library's decoder, which decides (and gives the
    error): so exactly the texts the standard decoder accepts are accepted, with equal values
    (msgspec refuses some it accepts, e.g. a lone surrogate escape; the reverse was not found in
    200,000 mutated frames)."""
    if not isinstance(text, str | bytes | bytearray):
        raise ParseError(f"frame is {type(text).__name__}, not text")
    try:
        return _decode_fast(text)
    except (msgspec.MsgspecError, ValueError, ArithmeticError, RecursionError, TypeError):
        pass
    try:
        return json.loads(text, parse_float=_float_token, parse_constant=_no_constant)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; Decimal() of a token whose exponent is
    # beyond the context's range (1e-4099999999999) raises InvalidOperation, an ArithmeticError.
    except (ValueError, ArithmeticError, RecursionError, TypeError) as e:
        raise ParseError(f"not JSON: {str(e)[:120]}") from None


def number(v: Any, what: str, key: str | None) -> Decimal:
    """A price or quantity: a JSON number (v2) or a decimal string (v1) -> the exact Decimal, >= 0,
    finite, at most :data:`~common.numbers.MAX_DECIMALS` decimals."""
    try:
        d = parse_decimal(v)
    except BadNumber as e:
        raise ParseError(f"{what}: {e}", key) from None
    if type(v) is not str:  # parse_decimal bounds the decimals of text itself, not of a Decimal
        exp = d.as_tuple().exponent
        if isinstance(exp, int) and exp < -MAX_DECIMALS and decimals(d) > MAX_DECIMALS:
            raise ParseError(f"{what}: more than {MAX_DECIMALS} decimals: {str(v)[:40]}", key)
        if type(d) is WideDecimal:
            return Decimal(d)
    return d


def crc(v: Any, key: str | None) -> int:
    """A checksum: a JSON integer (v2) or a digit string (v1, ``"c":"2583817756"``) in 0..2**32-1."""
    if isinstance(v, str) and 0 < len(v) <= 10 and v.isascii() and v.isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= CRC_MAX:
        raise ParseError(f"checksum is not a 32-bit unsigned integer: {str(v)[:40]}", key)
    return v


#: Seconds since the epoch of each ``YYYY-MM-DDTHH:MM:SS`` already validated (consecutive
#: messages share it); cleared past :data:`_SECS_MAX` entries.
_SECS: dict[str, int] = {}
_SECS_MAX = 4096


def rfc3339_ns(v: Any, key: str | None) -> int:
    """``"2023-07-30T15:29:58.343415Z"`` -> ns since the epoch, exactly (up to 9 fraction digits)."""
    m = _RFC3339.match(v) if isinstance(v, str) else None
    if m is None:
        raise ParseError(f"timestamp is not RFC 3339 UTC: {str(v)[:40]}", key)
    head = v[:19]       # the six fields the pattern matched, fixed width
    secs = _SECS.get(head)
    if secs is None:
        y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
        if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
            raise ParseError(f"timestamp out of range: {v[:40]}", key)
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        if len(_SECS) >= _SECS_MAX:
            _SECS.clear()
        _SECS[head] = secs
    frac = m.group(7)
    ns = int((frac or "").ljust(9, "0"))
    return max(0, secs * 1_000_000_000 + ns)


def epoch_ns(v: Any, key: str | None) -> int:
    """v1 level time ``"1618678133.365913"`` (seconds, decimal string) -> ns since the epoch."""
    if not isinstance(v, str):
        raise ParseError(f"level time is not a string: {str(v)[:40]}", key)
    try:
        d = parse_decimal(v)
    except BadNumber as e:
        raise ParseError(f"level time: {e}", key) from None
    if decimals(d) > 9 or d > 10**11:
        raise ParseError(f"level time out of range: {v[:40]}", key)
    return int(d * 1_000_000_000)


#: Words of refusals that say "not now", not "never": the symbol is not taken down for them (its
#: book simply does not arrive, and the core's snapshot time-out resubscribes it).
TRANSIENT = ("rate", "already subscribed", "subscription not found", "timeout", "timed out", "busy",
             "unavailable", "internal", "try again")


def refusal(error: Any, key: Any, what: str) -> Control:
    """A refused (un)subscription -> SYMBOL_ERROR for ``key`` when the venue refuses the symbol
    itself ("Currency pair not supported"), else ERROR (rate limits, "Already subscribed", a
    refusal that names no symbol). ``what`` says which request it answers."""
    text = error if isinstance(error, str) else str(error)
    text = text[:160] or "no reason given"
    key = key if isinstance(key, str) and key else None
    low = text.lower()
    if key is not None and what == "subscribe" and not any(w in low for w in TRANSIENT):
        return Control(ControlKind.SYMBOL_ERROR, text, key)
    return Control(ControlKind.ERROR, f"{what} refused: {text}", key)
