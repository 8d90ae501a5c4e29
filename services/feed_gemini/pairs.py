"""Gemini's REST instrument endpoints -> pair checks. Pure: no sockets, clock or state.

``GET /v1/symbols`` lists lowercase names with no separator (real, 2021)::

    ["btcusd","btcgusd","btcdai","btcgbp","btceur","btcsgd","ethbtc","ethusd",...,"1inchusd",...]

Concatenated names are ambiguous (``btcgusd`` is BTC/GUSD, not BTCG/USD), so the list is never
split into base and quote: :func:`parse_symbols` returns a :class:`ListedSymbols` that answers
"is canonical ``BASE/QUOTE`` listed?" by building the venue's name from our configured symbol.
The list says nothing about trading status (``btcgusd`` is listed but ``closed``).

``GET /v1/symbols/details/<symbol>`` gives one instrument with its status (real, 2021)::

    {"symbol":"BTCUSD","base_currency":"BTC","quote_currency":"USD","tick_size":1E-8,
     "quote_increment":0.01,"min_order_size":"0.00001","status":"open"}

``status`` is one of ``open``, ``closed``, ``cancel_only``, ``post_only``, ``limit_only``; only
``closed`` means no book to carry. ``tick_size`` (the quantity increment) and ``quote_increment``
(the price tick) are JSON numbers such as ``1E-8``: read exactly, never as floats. An unknown
symbol answers ``{"result":"error","reason":"InvalidSymbol","message":"..."}`` (HTTP 400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from common.feed.parsing import loads
from common.feed.types import PairInfo, ParseError

#: A canonical symbol: ``BASE/QUOTE``, each part letters and digits (``1INCH/USD``).
CANONICAL = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")
#: A venue name as the list spells it.
VENUE_NAME = re.compile(r"[a-z0-9]{2,40}")
#: Statuses under which the book exists (``closed`` is the one without).
BOOK_STATUSES = frozenset(("open", "cancel_only", "post_only", "limit_only"))


def venue_name(symbol: str) -> str:
    """``"BTC/USD"`` -> ``"btcusd"`` (the list's and REST paths' spelling)."""
    return symbol.replace("/", "").lower()


class ListedSymbols(Mapping[str, PairInfo]):
    """The ``/v1/symbols`` list as a mapping from canonical ``BASE/QUOTE`` to :class:`PairInfo`.

    Looking up ``"BTC/USD"`` builds ``btcusd`` from it and answers from the list (``key`` spelled
    by ``key_of``: ``btcusd`` for the WebSocket API, ``BTCUSD`` for v2). ``trading`` is True for
    every listed name: the list carries no status, and a name cannot tell BTCG/USD from BTC/GUSD
    (both are ``btcgusd``); :func:`parse_details` settles both. Lookup only:
    iterating yields nothing (enumerating canonical names would need a split), ``len`` is 0,
    ``bool`` says whether the list is non-empty, :attr:`names` holds the list. O(1) per lookup.
    """

    def __init__(self, names: frozenset[str], key_of: Callable[[str], str]) -> None:
        self._names = names
        self._key_of = key_of

    @property
    def names(self) -> frozenset[str]:
        """The venue's lowercase names as listed."""
        return self._names

    def __getitem__(self, symbol: str) -> PairInfo:
        if not isinstance(symbol, str) or not CANONICAL.fullmatch(symbol):
            raise KeyError(symbol)
        if venue_name(symbol) not in self._names:
            raise KeyError(symbol)
        return PairInfo(symbol, self._key_of(symbol), True, "listed")

    def __iter__(self) -> Iterator[str]:
        # The keys are the canonical spellings of listed names, which only a split could
        # enumerate: nothing sound to iterate over. Lookups are what the pair check needs.
        return iter(())

    def __len__(self) -> int:
        return 0  # consistent with __iter__; see names for the list itself

    def __bool__(self) -> bool:
        return bool(self._names)

    def __repr__(self) -> str:
        return f"<ListedSymbols {len(self._names)} names>"


def parse_symbols(text: str | bytes, key_of: Callable[[str], str]) -> ListedSymbols:
    """``/v1/symbols`` body -> :class:`ListedSymbols`; entries that are not lowercase
    alphanumeric names are skipped; a body that is not a list is a :class:`ParseError`."""
    m = loads(text)
    if isinstance(m, dict) and m.get("result") == "error":
        raise ParseError(f"symbol list error: {str(m.get('reason'))[:40]} {str(m.get('message'))[:120]}")
    if not isinstance(m, list):
        raise ParseError("symbol list is not a list")
    return ListedSymbols(frozenset(s for s in m if isinstance(s, str) and VENUE_NAME.fullmatch(s)), key_of)


@dataclass(frozen=True, slots=True)
class Details:
    """One ``/v1/symbols/details/<symbol>`` answer: ``price_tick`` is ``quote_increment``,
    ``qty_step`` is ``tick_size`` (exact decimals, None when absent or not a positive number)."""

    info: PairInfo
    price_tick: Decimal | None
    qty_step: Decimal | None


def _positive(v: object) -> Decimal | None:
    if isinstance(v, str):
        try:
            v = Decimal(v)
        except InvalidOperation:
            return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = Decimal(v)
    if isinstance(v, Decimal) and v.is_finite() and v > 0:
        return v
    return None


def parse_details(text: str | bytes, symbol: str, key_of: Callable[[str], str]) -> Details | None:
    """``/v1/symbols/details/<name>`` body for canonical ``symbol`` -> :class:`Details`, or None
    when the venue does not list that pair: its ``InvalidSymbol`` error, or details of another
    pair spelled alike (asking ``BTCG/USD`` gets ``btcgusd``, which is BTC/GUSD: the
    ``base_currency``/``quote_currency`` fields settle what the name cannot). ``info.trading``
    is True for the statuses under which a book exists (all but ``closed``). Numbers are read as
    exact decimals. Any other body is a :class:`ParseError` naming ``symbol``."""
    try:
        # stdlib json for its parse_float hook: ``1E-8`` must not pass through a float
        m = json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError, TypeError) as e:
        raise ParseError(f"symbol details not JSON: {str(e)[:80]}", symbol) from None
    if not isinstance(m, dict):
        raise ParseError("symbol details is not an object", symbol)
    if m.get("result") == "error":
        if m.get("reason") == "InvalidSymbol":
            return None
        raise ParseError(f"symbol details error: {str(m.get('reason'))[:40]} {str(m.get('message'))[:120]}",
                         symbol)
    name, status = m.get("symbol"), m.get("status")
    if not isinstance(name, str) or name.lower() != venue_name(symbol):
        raise ParseError(f"symbol details for {str(name)[:30]!r}, asked {symbol}", symbol)
    base, quote = m.get("base_currency"), m.get("quote_currency")
    if isinstance(base, str) and isinstance(quote, str) and f"{base}/{quote}".upper() != symbol:
        return None
    status = status if isinstance(status, str) else ""
    return Details(PairInfo(symbol, key_of(symbol), status in BOOK_STATUSES, status[:40]),
                   _positive(m.get("quote_increment")), _positive(m.get("tick_size")))
