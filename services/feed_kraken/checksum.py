"""Kraken's book checksum (WebSocket v1 and v2 alike): a CRC32 over the top of the book.

Algorithm (Kraken "Book checksum" guides v1 and v2; ``shared/exchanges.md`` §3):

1. the top 10 asks, price ascending, then the top 10 bids, price descending (fewer when a side
   holds fewer: a side with 3 levels contributes 3, an empty side nothing);
2. for each level, the price text with the ``.`` removed and the leading zeros stripped, then the
   quantity text treated the same way (``45285.2`` -> ``452852``, ``0.00100000`` -> ``100000``,
   ``0.00000500`` -> ``500``);
3. ``zlib.crc32`` of the concatenation, an unsigned 32-bit integer.

The digits must be the venue's fixed-precision text. The parsers keep each wire token as a
``Decimal`` with the wire's exponent (``Decimal("0.10000000")``), so ``format(d, "f")`` gives back
the wire text: that is the text used when no precision is known. When the ``instrument`` channel
gave the pair's ``(price_precision, qty_precision)``, a value is written with exactly that many
decimals, which restores trailing zeros a re-serialised source lost (``4.0`` -> ``4.00000000``).
A value with more significant decimals than the precision is never rounded: its own text is used
(and will not match, so the symbol resyncs: the precision we hold is out of date).
``Decimal.normalize`` and floats are never used: they change the digits.

Cost: the feed verifies after every message, so :func:`checksum` takes each level's text from a
memo keyed by the identity of the level's ``Decimal`` objects (:data:`_MEMO`): a level is
formatted once, when it first shows in the top 10, and a message costs 20 look-ups, a join and
the CRC (~4 us against ~25-35 us formatting 40 values per message). :func:`checksum_text` builds
the text afresh (the reference the tests compare with).
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from itertools import islice

from common.book import ASK, BID, Book

#: Levels per side that the checksum covers, whatever the subscribed depth.
TOP = 10

Precision = tuple[int, int] | None


def digits(d: Decimal, places: int | None = None) -> str:
    """The checksum text of one value: its decimal text (at ``places`` decimals when given and
    the value fits in them, else the value's own exponent) without the point and without leading
    zeros. ``digits(Decimal("0.00000500")) == "500"``; ``digits(Decimal("4.0"), 8) ==
    "400000000"``; ``digits(Decimal("29430.25"), 1) == "2943025"`` (never rounded). String
    operations only (no quantize, no ``as_tuple``): this runs 40 times per message."""
    s = format(d, "f")
    if places is not None:
        dot = s.find(".")
        n = 0 if dot < 0 else len(s) - dot - 1     # decimals as written
        if n < places:
            s += "0" * (places - n)                 # the point goes anyway: no need to add one
        elif n > places:
            cut = len(s) - (n - places)
            if s[cut:].strip("0") == "":            # only zeros beyond the precision: drop them
                s = s[:cut]
    return s.replace(".", "").lstrip("0")


def side_text(levels: list[tuple[Decimal, Decimal]], precision: Precision = None) -> str:
    """The concatenated checksum text of ``levels`` (already in checksum order)."""
    pp, qp = precision if precision is not None else (None, None)
    return "".join(digits(p, pp) + digits(q, qp) for p, q in levels)


def checksum_text(book: Book, precision: Precision = None) -> str:
    """The string Kraken's CRC32 is taken over: top asks ascending, then top bids descending."""
    asks = list(islice(book.iter_side(ASK), TOP))
    bids = list(islice(book.iter_side(BID), TOP))
    return side_text(asks, precision) + side_text(bids, precision)


#: Memo of each level's checksum fragment (price digits + qty digits):
#: ``id(qty) -> (qty, price, precision, fragment)``. Keyed by the identity of the ``Decimal``
#: objects the book holds, never by value (equal values with other exponents have other digits:
#: ``1.25`` and ``1.250``): an entry keeps its objects alive, so an ``id`` found is that very
#: quantity object; the price is checked by identity and the precision by equality, so the
#: fragment is exactly what :func:`digits` gives for them. A level is formatted once, when it first
#: shows in the top of a book, not once per message. One memo for every book of the process,
#: cleared when it exceeds :data:`MEMO_MAX` entries (a few MB at most; the live top levels of every
#: book are then formatted again, once each: 20 per book).
_MEMO: dict[int, tuple[Decimal, Decimal, Precision, str]] = {}
MEMO_MAX = 16384


def _fragments(book: Book, precision: Precision) -> list[str]:
    """The checksum text of the top :data:`TOP` asks (ascending) then bids (descending), one
    fragment per level, each from the memo (:data:`_MEMO`) when it holds that level. O(log n + 20)."""
    memo = _MEMO
    if len(memo) > MEMO_MAX:
        memo.clear()
    pp, qp = precision if precision is not None else (None, None)
    out: list[str] = []
    append = out.append
    get = memo.get
    asks, bids = book.asks, book.bids
    # the sorted key lists' first (asks) / last (bids) sublist, when it holds TOP keys (nearly
    # always: sublists hold up to ~1000), saves the generic slice
    al, bl = asks._list, bids._list
    top_asks: list[Decimal] = al._lists[0][:TOP] if al._lists and len(al._lists[0]) >= TOP else al[:TOP]
    top_bids: list[Decimal] = bl._lists[-1][-TOP:] if bl._lists and len(bl._lists[-1]) >= TOP else bl[-TOP:]
    top_bids.reverse()
    for d, keys in ((asks, top_asks), (bids, top_bids)):
        for p in keys:
            q = d[p]
            e = get(id(q))
            if e is not None and e[1] is p and (e[2] is precision or e[2] == precision):
                append(e[3])
            else:
                frag = digits(p, pp) + digits(q, qp)
                memo[id(q)] = (q, p, precision, frag)
                append(frag)
    return out


def checksum(book: Book, precision: Precision = None) -> int:
    """Kraken's CRC32 of ``book`` (unsigned 32-bit). ``precision`` is the pair's
    ``(price decimals, qty decimals)`` from the v2 ``instrument`` channel, or None to use each
    value's own wire exponent. Equal to ``zlib.crc32(checksum_text(book, precision))``, with each
    level's text taken from the memo (:func:`_fragments`). O(log n + 20) per call."""
    return zlib.crc32("".join(_fragments(book, precision)).encode("ascii"))


def mismatch(book: Book, expected: int, precision: Precision = None) -> str | None:
    """None when ``checksum(book, precision) == expected``; else one log line naming both values
    and the top of the book, e.g. ``"checksum mismatch: venue 974947235, computed 1234 (best bid
    0.05000 x 0.00000500, best ask 0.05005 x 0.00000500, 10/10 levels)"``."""
    got = checksum(book, precision)
    if got == expected:
        return None
    bid, ask = book.best()

    def lvl(x: tuple[Decimal, Decimal] | None) -> str:
        return "none" if x is None else f"{format(x[0], 'f')} x {format(x[1], 'f')}"

    return (f"checksum mismatch: venue {expected}, computed {got} (best bid {lvl(bid)}, best ask {lvl(ask)}, "
            f"{len(book.bids)}/{len(book.asks)} levels)")
