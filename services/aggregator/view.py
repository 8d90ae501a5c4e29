"""The merged view of one symbol, kept incrementally (pure: no sockets, no clock).

What subscribers see of a symbol is, per side, the merged top-N of its live venues' books (dust
out, order as :mod:`services.aggregator.merge`) and, where sizes are configured, the streamed
depletion summaries (a walk of the merged side per size). Rebuilding all of it for every snapshot
cost most of the aggregator's CPU; :class:`MergedView` rebuilds only what a change can reach:

* every side remembers how deep its published part goes: the price of the N-th merged level
  (``top_floor``) and the deepest level the depletion walks took (``depl_floor``); None when the
  side has fewer levels than that (then every level counts);
* :meth:`MergedView.note` is told each venue delta: a side whose delta reaches a floor (a bid at
  or above it, an ask at or below it: a level *at* the floor price can reorder ties) gets that
  part marked stale; a delta strictly beyond both floors changes nothing subscribers see;
* anything else that can change the view (a venue's book replaced or cleared, its status, the
  set of live venues, the exact-to depth) calls :meth:`MergedView.invalidate`; :meth:`refresh`
  also invalidates by itself when the live venues or the exact-to prices differ from last time.

:meth:`MergedView.refresh` then rebuilds the stale parts and says whether the view changed. It
merges each live venue's best levels, which the view keeps per venue and side (a :class:`_Part`,
up to twice what a merge takes) and :meth:`MergedView.note` patches with every delta (a bisect
and a short list insert or delete per level) instead of re-reading the book; a part that
removals left short is topped up from the book beyond its last price, one that is gone (the
view invalidated) is rebuilt. Only levels that can make the merged top-N are merged, and a
depletion walk first merges only the levels down to where the last walk ended. Levels are exact
``Decimal``\\ s throughout; the wire text of the published levels is kept and reused for a level
published again unchanged (``price_text``/``fmt`` run only for new levels).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

from common.book import ASK, BID, Book
from common.config import NO_DUST, DustRule
from common.numbers import fmt
from common.schema import price_text
from services.aggregator import depletion, merge
from services.aggregator.merge import MergedLevel

_PRICE = itemgetter(0)
_AMOUNT = itemgetter(1)
#: The depletion side (an order of that side) that walks each book side.
_ORDER_SIDE = {BID: depletion.SELL, ASK: depletion.BUY}

Exact = tuple[Decimal | None, Decimal | None]


def venue_top(book: Book, side: int, n: int, venue: str, dust: DustRule) -> list[MergedLevel]:
    """The best ``n`` levels of one venue's ``side`` that are not dust, as merged levels
    ``(price, amount, venue)``, best first. O(n + dust levels skipped)."""
    out: list[MergedLevel] = []
    if n <= 0:
        return out
    d = book.bids if side == BID else book.asks
    keys = reversed(d) if side == BID else iter(d)
    min_amount, min_notional = dust.min_amount, dust.min_notional
    append = out.append
    if min_amount or min_notional:
        for p in keys:
            q = d[p]
            if q < min_amount or p * q < min_notional:
                continue
            append((p, q, venue))
            if len(out) == n:
                break
    else:
        for p in keys:
            append((p, d[p], venue))
            if len(out) == n:
                break
    return out


#: Deltas a cached venue side takes between two reads of it before it is dropped instead (and
#: rebuilt from the book when next read). Paced input brings one or two per stream between
#: publishes; a flood (a saturated aggregator draining thousands of messages per round) brings
#: many, and there one rebuild per round is cheaper than a patch per delta (and once every part
#: is dropped, a delta costs nothing here: see ``MergedView._cold``).
PATCH_BUDGET = 8


class _Part:
    """One venue side's best levels (dust out, best first) as cached between refreshes, kept up
    to date by :meth:`patch` from the deltas themselves instead of rebuilt from the book.

    ``keys``: the levels' sort keys (the price for asks, minus the price for bids: ascending
    either way) for :mod:`bisect`. ``complete``: the levels are every non-dust level of the
    venue side; otherwise they are exactly its best ``len(levels)`` and anything beyond the last
    price is unknown here (a removal can leave fewer than wanted: :func:`_parts` tops them up
    from the book)."""

    __slots__ = ("budget", "cap", "complete", "keys", "levels")

    def __init__(self, levels: list[MergedLevel], bid: bool, cap: int) -> None:
        self.budget = PATCH_BUDGET
        self.cap = cap
        self.complete = len(levels) < cap
        self.levels = levels
        self.keys = [-lv[0] for lv in levels] if bid else [lv[0] for lv in levels]

    def patch(self, levels: Sequence[Any], bid: bool, venue: str, dust: DustRule) -> None:
        """Apply a delta's ``(price, qty)`` levels (already applied to the venue's book) to the
        cached levels, keeping at most ``cap``. A bisect and a short list insert or delete per
        level."""
        lv, keys, cap = self.levels, self.keys, self.cap
        min_amount, min_notional = dust.min_amount, dust.min_notional
        for p, q in levels:
            k = -p if bid else p
            if not self.complete and (not keys or k > keys[-1]):
                continue                # beyond the known part: a top-up reads the book
            i = bisect_left(keys, k)
            present = i < len(keys) and keys[i] == k
            if not q or q < min_amount or (min_notional and p * q < min_notional):
                if present:
                    del lv[i]
                    del keys[i]
            elif present:
                lv[i] = (lv[i][0], q, venue)
            else:
                lv.insert(i, (p, q, venue))
                keys.insert(i, k)
                if len(lv) > cap:
                    lv.pop()
                    keys.pop()
                    self.complete = False

    def top_up(self, book: Book, bid: bool, venue: str, dust: DustRule) -> None:
        """Fill a part cut short back to ``cap`` levels from the book, beyond its last price
        (rebuilt from the book's best when it ran empty)."""
        lv, keys, n = self.levels, self.keys, self.cap
        if not lv:
            it = reversed(book.bids) if bid else iter(book.asks)
        elif bid:
            it = book.bids.irange(maximum=lv[-1][0], inclusive=(True, False), reverse=True)
        else:
            it = book.asks.irange(minimum=lv[-1][0], inclusive=(False, True))
        d = book.bids if bid else book.asks
        min_amount, min_notional = dust.min_amount, dust.min_notional
        for p in it:
            q = d[p]
            if q < min_amount or (min_notional and p * q < min_notional):
                continue
            lv.append((p, q, venue))
            keys.append(-p if bid else p)
            if len(lv) == n:
                return
        self.complete = True


def top(books: Mapping[str, Book], side: int, dust: Mapping[str, DustRule], n: int,
        cache: dict[str, _Part] | None = None) -> list[MergedLevel]:
    """The best ``n`` merged levels of ``side``: equal to :func:`merge.top` (bids highest first,
    asks lowest first, at equal price the larger amount first, then the venue id), from each
    venue's best ``n`` and a stable sort. ``cache``: venue -> its best ``n`` (a :class:`_Part`)
    still valid, filled in for the others. O(V * n log(V * n)) with V venues."""
    parts = _parts(books, side, dust, n, cache)
    if cache is not None and len(parts) > 1:
        # Only levels at or better than the best of the venues' n-th prices can be in the top n
        # (that venue alone has n of them): merge just those (sort keys ascending either side).
        keys = [cache[v].keys for v in sorted(books)]
        cut = min([k[n - 1] for k in keys if len(k) >= n], default=None)
        if cut is not None:
            parts = [p[:bisect_right(k, cut, 0, len(p))] for p, k in zip(parts, keys)]
    levels = _merged(parts, side)
    del levels[n:]
    return levels


def _parts(books: Mapping[str, Book], side: int, dust: Mapping[str, DustRule], n: int,
           cache: dict[str, _Part] | None) -> list[list[MergedLevel]]:
    """Each venue's best ``n`` (what :func:`venue_top` returns), venue order. With ``cache``,
    from its parts, which keep up to ``2n`` levels so that removals seldom leave fewer than
    ``n`` (a part that does is topped up from the book; an absent one is built)."""
    parts = []
    bid = side == BID
    for v in sorted(books):
        part = cache.get(v) if cache is not None else None
        if part is None:
            if cache is None:
                parts.append(venue_top(books[v], side, n, v, dust.get(v, NO_DUST)))
                continue
            part = cache[v] = _Part(venue_top(books[v], side, 2 * n, v, dust.get(v, NO_DUST)), bid, 2 * n)
        elif len(part.levels) < n and not part.complete:
            part.top_up(books[v], bid, v, dust.get(v, NO_DUST))
        part.budget = PATCH_BUDGET
        levels = part.levels
        parts.append(levels[:n] if len(levels) > n else levels)
    return parts


def _merged(parts: list[list[MergedLevel]], side: int) -> list[MergedLevel]:
    """Venue parts (each best first, in venue order) merged best first, ties as merge.top."""
    if len(parts) == 1:
        return list(parts[0])
    levels = [lv for part in parts for lv in part]          # venue order: the last tie-break
    if len(set(map(_PRICE, levels))) != len(levels):       # venues quote the same price
        levels.sort(key=_AMOUNT, reverse=True)              # stable: larger amount first
    # Stable, and the venue parts are presorted runs: a merge of O(V * n) comparisons.
    levels.sort(key=_PRICE, reverse=side == BID)
    return levels


class MergedView:
    """The published part of one symbol's merged book, rebuilt only where a change reaches it
    (see the module docstring). ``n`` levels per side; ``sizes``: the streamed depletion sizes
    (None or empty: none); ``dust`` per venue; ``depth``: how many levels of each venue the
    depletion walks start from (default max(4n, 40)), quadrupled when a walk needs more unless
    ``grow`` is False."""

    __slots__ = ("_cold", "_deep", "_depth", "_grow", "_text", "_venue", "depl", "depl_floor", "depl_stale", "dust",
                 "key", "n", "sizes", "top", "top_floor", "top_stale", "wire")

    def __init__(self, n: int, dust: Mapping[str, DustRule], sizes: Sequence[Decimal] | None = None, *,
                 depth: int | None = None, grow: bool = True) -> None:
        self.n = n
        self.dust = dust
        self.sizes = list(sizes) if sizes else None
        #: Per side (BID, ASK): the merged top-N and its wire form ([price, amount, venue] text).
        self.top: list[list[MergedLevel]] = [[], []]
        self.wire: list[list[list[str]]] = [[], []]
        #: Per side: the depletion summaries of the order walking it (None: no sizes).
        self.depl: list[dict[str, Any] | None] = [None, None]
        self.top_floor: list[Decimal | None] = [None, None]
        self.depl_floor: list[Decimal | None] = [None, None]
        self.top_stale = [True, True]
        self.depl_stale = [bool(self.sizes), bool(self.sizes)]
        #: The live venues and exact-to prices the view was built from.
        self.key: Any = None
        #: Everything is stale and no venue cache is left: a delta has nothing to mark.
        self._cold = True
        self._text: list[dict[MergedLevel, list[str]]] = [{}, {}]
        #: Per side: venue -> its best n levels (dust out), patched by each delta.
        self._venue: list[dict[str, _Part]] = [{}, {}]
        #: Per side: venue -> its best ``_depth[side]`` levels for the depletion walks (same rule).
        self._deep: list[dict[str, _Part]] = [{}, {}]
        depth = depth or max(4 * n, 40)
        self._depth = [depth, depth]
        self._grow = grow

    @property
    def floor(self) -> list[Decimal | None]:
        """Per side, what a delta must reach to change the view: the deeper of the two floors
        (None: any level can)."""
        out: list[Decimal | None] = []
        for side in (BID, ASK):
            t, d = self.top_floor[side], self.depl_floor[side]
            if t is None or (self.sizes and d is None):
                out.append(None)
            elif not self.sizes or d is None:
                out.append(t)
            else:
                out.append(min(t, d) if side == BID else max(t, d))
        return out

    def invalidate(self) -> None:
        """Everything is rebuilt by the next :meth:`refresh` (from the books: call this when a
        venue book was replaced or cleared)."""
        self.top_stale[BID] = self.top_stale[ASK] = True
        for caches in (self._venue, self._deep):
            caches[BID].clear()
            caches[ASK].clear()
        self._cold = True
        if self.sizes:
            self.depl_stale[BID] = self.depl_stale[ASK] = True

    def note(self, venue: str, bids: Sequence[Any], asks: Sequence[Any]) -> bool:
        """A delta of ``(price, qty)`` levels was applied to ``venue``'s book: mark stale what
        it reaches; True when it reaches any published part (it may change what subscribers
        see) or that part is stale already, False when every level lies strictly beyond both
        floors of its side. O(levels)."""
        if self._cold:
            return True         # the hot case in a burst: one attribute read per delta
        hit = False
        if bids:
            hit = self._note_side(BID, venue, bids)
        if asks:
            hit = self._note_side(ASK, venue, asks) or hit
        if all(self.top_stale) and (not self.sizes or all(self.depl_stale)) and not any(self._venue) \
                and not any(self._deep):
            self._cold = True
        return hit

    def _note_side(self, side: int, venue: str, levels: Sequence[Any]) -> bool:
        cache, deep = self._venue[side], self._deep[side]
        if self.top_stale[side] and (self.depl_stale[side] or not self.sizes) and venue not in cache \
                and venue not in deep:
            return True         # all it could reach is rebuilt anyway
        bid = side == BID
        best = levels[0][0]
        for p, _ in levels:
            if (p > best) if bid else (p < best):
                best = p
        # The venue's cached best levels are patched with the delta, not rebuilt from the book.
        # A part that took PATCH_BUDGET deltas since it was last read is dropped instead.
        for parts in (cache, deep):
            part = parts.get(venue)
            if part is None:
                continue
            if part.budget:
                part.budget -= 1
                part.patch(levels, bid, venue, self.dust.get(venue, NO_DUST))
            else:
                del parts[venue]
        hit = False
        f = self.top_floor[side]
        if f is None or (best >= f if bid else best <= f):
            self.top_stale[side] = hit = True
        if self.sizes:
            f = self.depl_floor[side]
            if f is None or (best >= f if bid else best <= f):
                self.depl_stale[side] = hit = True
        return hit

    def refresh(self, books: Mapping[str, Book], exact: Exact) -> bool:
        """Rebuild the stale parts from ``books`` (the live venues' books) and ``exact`` (the
        merged exact-to price per side); True when the top-N or a depletion summary changed.
        O(V * n) per stale top side, O(k log V) per stale depletion side walking k levels."""
        key = (tuple(books), exact)
        if key != self.key:
            self.key = key
            self.invalidate()
        changed = False
        self._cold = False
        for side in (BID, ASK):
            if self.top_stale[side]:
                self.top_stale[side] = False
                levels = top(books, side, self.dust, self.n, self._venue[side])
                self.top_floor[side] = levels[-1][0] if len(levels) == self.n else None
                if levels != self.top[side]:
                    self.top[side] = levels
                    self.wire[side] = self._wire(side, levels)
                    changed = True
            if self.depl_stale[side]:
                self.depl_stale[side] = False
                assert self.sizes is not None
                summ, reached = self._walk(books, side, exact[side])
                self.depl_floor[side] = reached
                if summ != self.depl[side]:
                    self.depl[side] = summ
                    changed = True
        return changed

    def _walk(self, books: Mapping[str, Book], side: int,
              limit: Decimal | None) -> tuple[dict[str, Any], Decimal | None]:
        """The depletion summaries of ``side`` and how deep they reached
        (:func:`depletion.side_summaries`), walking the merge of each venue's cached best
        ``_depth`` levels. That merge is the merged side itself down to ``bound``, the least deep
        last price of the venues it cut short (their next levels are strictly deeper); a walk
        that ends at or before ``bound`` is exact. One that does not is done again on the whole
        merged side, and the depth kept per venue quadruples. The walk is first tried on the
        levels down to where the last one reached (when that is within ``bound``)."""
        depth = self._depth[side]
        parts = _parts(books, side, self.dust, depth, self._deep[side])
        bound: Decimal | None = None
        for part in parts:
            if len(part) == depth:
                last = part[-1][0]
                if bound is None or (last > bound if side == BID else last < bound):
                    bound = last
        order_side = _ORDER_SIDE[side]
        bid = side == BID
        guess = self.depl_floor[side]       # how deep the last walk reached
        if guess is not None and (bound is None or (guess >= bound if bid else guess <= bound)):
            # Most walks end about where the last one did: first merge only the levels down to
            # there (all of them, so that prefix is exact); a walk that ends in it is the walk.
            cache, key = self._deep[side], -guess if bid else guess
            short = [p[:bisect_right(cache[v].keys, key, 0, len(p))] for p, v in zip(parts, sorted(books))]
            summ, reached = depletion.side_summaries(order_side, _merged(short, side), self.sizes or (), limit)
            if reached is not None:
                return summ, reached
        summ, reached = depletion.side_summaries(order_side, _merged(parts, side), self.sizes or (), limit)
        if bound is None or (reached is not None and (reached >= bound if side == BID else reached <= bound)):
            return summ, reached
        if self._grow:
            self._depth[side] = depth * 4
            self._deep[side].clear()
        return depletion.side_summaries(order_side, merge.merged_iter(books, side, self.dust), self.sizes or (), limit)

    def _wire(self, side: int, levels: list[MergedLevel]) -> list[list[str]]:
        """The wire form of ``levels``, reusing the text of levels published last time."""
        old = self._text[side]
        new: dict[MergedLevel, list[str]] = {}
        out = []
        for lv in levels:
            w = old.get(lv)
            if w is None:
                p, a, v = lv
                w = [price_text(p), fmt(a), v]
            new[lv] = w
            out.append(w)
        self._text[side] = new
        return out

    def spread(self) -> Decimal | None:
        """Best ask - best bid of the view (negative when venues cross), None when a side is empty."""
        return merge.spread(self.top[BID], self.top[ASK])

    def depletion(self) -> dict[str, Any] | None:
        """The streamed ``depletion`` field (``{"buy": ..., "sell": ...}``), None without sizes."""
        if not self.sizes:
            return None
        return {depletion.BUY: self.depl[ASK], depletion.SELL: self.depl[BID]}
