"""The live terminal book's pure core: what it shows, when it redraws, how keys change it.

No sockets, no terminal, no wall clock: every function takes the times it needs, so tests drive it
with an injected clock. :mod:`services.client.tui.app` is the thin I/O around it.

* :class:`RedrawLimiter` decides when to draw: at most ``max_hz`` (<= 20) times a second while the
  book changes, and once a second when nothing changes (so ages and "no snapshot for 5 s" tick).
* :class:`RateMeter` counts updates per second over a sliding window.
* :class:`WatchState` keeps the current symbol, the last book, epochs, missed ``seq`` and when each
  venue was last heard; :meth:`WatchState.on_key` maps keys to actions.
* :func:`render` turns a state into a rich renderable (tables, colours), never raw escape codes.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from common.numbers import fmt
from common.schema import DepletionSummary, Level, MergedBook

# Limits
MAX_HZ = 20.0            # never redraw more often than this
IDLE_REDRAW = 1.0        # seconds between redraws when nothing changes (ages keep ticking)
MIN_LEVELS, MAX_LEVELS = 1, 50
NEW_EPOCH_SHOWN = 15.0   # seconds the "new epoch" notice stays highlighted
EPSILON = 1e-6           # added to 1/max_hz: float rounding never fits max_hz + 1 draws in a second

#: Fixed colours for the venues we know (away from the green bids and red asks); others get one
#: from :data:`PALETTE` by a stable hash.
VENUE_COLOURS = {"binance": "yellow", "binance_us": "bright_yellow", "bitstamp": "cyan",
                 "kraken": "magenta", "coinbase": "bright_blue", "gemini": "bright_white"}
PALETTE = ("bright_magenta", "bright_cyan", "blue", "white", "bright_green", "bright_red")
STATUS_STYLES = {"live": "bold green", "syncing": "bold yellow", "stale": "bold magenta", "down": "bold red"}


def venue_colour(venue: str) -> str:
    """The venue's colour: fixed for known venues, else stable across runs (crc32 of the id)."""
    return VENUE_COLOURS.get(venue) or PALETTE[zlib.crc32(venue.encode()) % len(PALETTE)]


# --- redraw rate ---------------------------------------------------------------------------------


class RedrawLimiter:
    """When to redraw: at most ``max_hz`` times a second while changes arrive, and every
    ``idle`` seconds when none do. ``clock`` is injectable (monotonic seconds).

    Use: :meth:`changed` on every update, :meth:`due` to ask, :meth:`drawn` after drawing, and
    :meth:`wait` for how long the I/O loop may block before asking again. O(1) each.
    """

    def __init__(self, max_hz: float = 10.0, *, idle: float = IDLE_REDRAW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1.0 <= max_hz <= MAX_HZ:
            raise ValueError(f"max_hz must be between 1 and {MAX_HZ:g}, got {max_hz!r}")
        if idle < 1.0 / max_hz:
            raise ValueError(f"idle ({idle!r} s) must be at least 1/max_hz")
        self.min_interval = 1.0 / max_hz + EPSILON
        self.idle = idle
        self.clock = clock
        self.dirty = True          # the first call to due() draws
        self.last: float | None = None
        self.draws = 0

    def changed(self) -> None:
        """Something visible changed (a book, a key, a status)."""
        self.dirty = True

    def next_due(self) -> float:
        """The clock time from which :meth:`due` is true (-inf before the first draw)."""
        if self.last is None:
            return float("-inf")
        return self.last + (self.min_interval if self.dirty else self.idle)

    def due(self) -> bool:
        """True when a redraw is allowed and useful now."""
        return self.clock() >= self.next_due()

    def drawn(self) -> None:
        """Record a redraw at the clock's current time."""
        self.last = self.clock()
        self.dirty = False
        self.draws += 1

    def wait(self) -> float:
        """Seconds until :meth:`due` can next be true (0 when it is now)."""
        return max(0.0, self.next_due() - self.clock())


class RateMeter:
    """Events per second over the last ``window`` seconds. O(1) amortised per event; memory is
    the number of events in one window."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.times: deque[float] = deque()

    def add(self, now: float) -> None:
        self.times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self.times) / self.window


# --- keys ----------------------------------------------------------------------------------------

QUIT, NEXT, PREV, MORE, FEWER = "quit", "next", "prev", "more", "fewer"

#: Key sequences as the terminal sends them -> actions. Digits 1-9 pick a symbol by position.
#: Arrows come as CSI (``ESC [ C``) or, in the terminal's application mode, SS3 (``ESC O C``).
KEYMAP = {"q": QUIT, "Q": QUIT, "\x03": QUIT,
          "\t": NEXT, "n": NEXT, "\x1b[C": NEXT, "\x1b[B": NEXT, "\x1bOC": NEXT, "\x1bOB": NEXT,
          "\x1b[Z": PREV, "p": PREV, "\x1b[D": PREV, "\x1b[A": PREV, "\x1bOD": PREV, "\x1bOA": PREV,
          "+": MORE, "=": MORE, "-": FEWER, "_": FEWER}


def parse_keys(data: str) -> list[str]:
    """Terminal input -> key names: CSI and SS3 escape sequences (arrows, Shift-Tab) stay whole,
    any other character is one key. ``"q\\x1b[Cn"`` -> ``["q", "\\x1b[C", "n"]``."""
    keys, i = [], 0
    while i < len(data):
        if data.startswith("\x1b[", i) and i + 2 < len(data):
            j = i + 2
            while j < len(data) and not ("@" <= data[j] <= "~"):
                j += 1
            keys.append(data[i:j + 1])
            i = j + 1
        elif data.startswith("\x1bO", i) and i + 2 < len(data):
            keys.append(data[i:i + 3])
            i += 3
        else:
            keys.append(data[i])
            i += 1
    return keys


# --- state ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class SymbolStats:
    """Per subscription (one symbol): arrivals, rate, epoch and seq bookkeeping."""

    rate: RateMeter = field(default_factory=RateMeter)
    received: int = 0
    missed: int = 0                 # seq numbers skipped within an epoch
    dropped: int = 0                # malformed snapshots (counted, not shown)
    epochs: int = 0                 # new epochs seen (aggregator restarts)
    epoch_at: float | None = None   # monotonic time the last new epoch arrived
    last_at: float | None = None    # monotonic time of the last book


@dataclass(slots=True)
class WatchState:
    """Everything the view shows, updated by books and keys; times are passed in.

    ``symbols`` is the list the symbol keys walk through; ``index`` the shown one.
    """

    symbols: list[str]
    endpoint: str
    levels: int = 10
    index: int = 0
    timeout: float = 5.0
    started: float = 0.0
    book: MergedBook | None = None
    stats: SymbolStats = field(default_factory=SymbolStats)
    heard: dict[str, int] = field(default_factory=dict)   # venue -> ns, when venue_ts is absent
    error: str | None = None                              # the subscription stopped: why

    @property
    def symbol(self) -> str:
        return self.symbols[self.index]

    def on_book(self, book: MergedBook, now: float, now_ns: int) -> None:
        """A book of the shown symbol arrived at ``now`` (monotonic) / ``now_ns`` (wall).

        Missed ``seq`` and a new ``epoch`` are the subscriber's findings (``book.missed``,
        ``book.new_epoch``); they are added up here and shown, never hidden."""
        st = self.stats
        if book.new_epoch:
            st.epochs += 1
            st.epoch_at = now
        st.missed += book.missed
        st.last_at = now
        st.received += 1
        st.rate.add(now)
        for venue, status in book.venues.items():
            if status == "live":
                self.heard[venue] = now_ns
        self.book = book

    def select(self, index: int, now: float) -> None:
        """Show ``symbols[index]`` (wraps around): forget the old book and counters."""
        self.index = index % len(self.symbols)
        self.book = None
        self.stats = SymbolStats()
        self.heard.clear()
        self.started = now

    def on_key(self, key: str, now: float) -> str | None:
        """Apply one key; returns the action taken (``quit``, ``next``, ...) or None."""
        action = KEYMAP.get(key)
        if action is None and len(key) == 1 and key.isdigit() and key != "0":
            if int(key) <= len(self.symbols) and int(key) - 1 != self.index:
                self.select(int(key) - 1, now)
                return NEXT
            return None
        if action in (NEXT, PREV) and len(self.symbols) > 1:
            self.select(self.index + (1 if action == NEXT else -1), now)
        elif action == MORE:
            self.levels = min(MAX_LEVELS, self.levels + 1)
        elif action == FEWER:
            self.levels = max(MIN_LEVELS, self.levels - 1)
        return action

    def heard_ns(self, venue: str) -> int | None:
        """When the venue was last heard (ns): ``venue_ts[venue]["heard"]`` if the snapshot has
        it, else the arrival of the last snapshot that showed the venue live."""
        vt = (self.book.venue_ts or {}).get(venue) if self.book is not None else None
        if vt is not None and vt.heard > 0:
            return vt.heard
        return self.heard.get(venue)


# --- rendering -----------------------------------------------------------------------------------


def ago(seconds: float | None) -> str:
    """A short human age: ``0.3 s``, ``12 s``, ``4 min``, ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _cost(d: DepletionSummary) -> str:
    """filled x vwap, rounded to cents and marked approximate (the streamed vwap is rounded)."""
    if d.vwap is None:
        return "-"
    return "≈" + fmt((d.filled * d.vwap).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _side_table(title: str, levels: Iterable[Level], n: int, bids: bool) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, expand=True, pad_edge=False,
              title_style="bold green" if bids else "bold red")
    cols = ("venue", "amount", "price") if bids else ("price", "amount", "venue")
    for c in cols:
        t.add_column(c, justify="left" if c == "venue" else "right", no_wrap=True,
                     style="bold" if c == "price" else None)
    for i, lv in enumerate(levels):
        if i >= n:
            break
        venue = Text(lv.venue, style=venue_colour(lv.venue))
        price = Text(fmt(lv.price), style="green" if bids else "red")
        row = (venue, fmt(lv.amount), price) if bids else (price, fmt(lv.amount), venue)
        t.add_row(*row)
    return t


def render(state: WatchState, now: float, now_ns: int, width: int | None = None,
           height: int | None = None) -> RenderableType:
    """The whole screen for ``state`` at monotonic ``now`` / wall ``now_ns``. Pure.

    With the terminal's ``width`` and ``height``, fewer levels are shown when all of them would
    not fit (the depletion table goes first when fewer than 5 would remain), so the footer with
    the keys stays on screen."""
    st, book = state.stats, state.book
    head = Text()
    head.append(" bookmux ", style="bold reverse")
    head.append("  ")
    for i, sym in enumerate(state.symbols):
        head.append(f" {i + 1}:{sym} ", style="bold reverse cyan" if i == state.index else "dim")
    parts: list[RenderableType] = [head]
    if state.error:
        parts.append(Text(f"{state.error} (q quits)", style="bold white on red"))

    silent = now - (st.last_at if st.last_at is not None else state.started)
    if book is None:
        msg = Text(f"waiting for the first snapshot of {state.symbol} on {state.endpoint} ({ago(silent)})",
                   style="bold yellow")
        if silent >= state.timeout:
            msg = Text(f"no snapshot for {silent:.0f} s: is the publisher running on {state.endpoint}?",
                       style="bold white on red")
        parts += [Text(""), msg, Text(""), _footer(state)]
        return Group(*parts)

    line = Text()
    line.append(f"{book.symbol}", style="bold")
    if book.spread is not None:
        line.append("   spread ")
        line.append(fmt(book.spread), style="bold red" if book.spread < 0 else "bold")
        if book.spread < 0:
            line.append(" (crossed)", style="bold red")
    else:
        line.append("   spread -")
    if book.bids and book.asks:
        line.append("   mid ")
        line.append(fmt(book.mid) if book.mid is not None else "-", style="bold")
    line.append(f"   best bid {fmt(book.bids[0].price)}" if book.bids else "   best bid -", style="green")
    line.append(f"   best ask {fmt(book.asks[0].price)}" if book.asks else "   best ask -", style="red")
    flow = Text()
    flow.append(f"{st.rate.rate(now):.1f} updates/s", style="cyan")
    flow.append("   missed seq ")
    flow.append(str(st.missed), style="bold red" if st.missed else "green")
    if st.dropped:
        flow.append(f"   malformed {st.dropped}", style="bold red")
    flow.append(f"   epoch {book.epoch} seq {book.seq}")
    if st.epoch_at is not None and now - st.epoch_at < NEW_EPOCH_SHOWN:
        flow.append(f"  NEW EPOCH {ago(now - st.epoch_at)} ago (aggregator restarted)", style="bold black on yellow")
    flow.append(f"   age {(now_ns - book.ts) / 1e6:.0f} ms" if book.ts else "   age -", style="dim")
    flow.append(f"   last snapshot {ago(silent)} ago", style="yellow" if silent >= 2 else "dim")
    parts += [line, flow]
    if silent >= state.timeout:
        parts.append(Text(f"no snapshot for {silent:.0f} s (showing the last one): quiet market or a stopped "
                          f"publisher on {state.endpoint}? see each venue's last heard below",
                          style="bold white on red"))

    venues = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    venues.add_column("venue", no_wrap=True)
    venues.add_column("status", no_wrap=True)
    venues.add_column("last heard", justify="right", no_wrap=True)
    venues.add_column("book updated", justify="right", no_wrap=True)
    for v in sorted(book.venues):
        status = book.venues[v]
        heard = state.heard_ns(v)
        vt = (book.venue_ts or {}).get(v)
        venues.add_row(Text(v, style=venue_colour(v)), Text(status, style=STATUS_STYLES.get(status, "bold")),
                       ago((now_ns - heard) / 1e9) + " ago" if heard else "-",
                       ago((now_ns - vt.rts) / 1e9) + " ago" if vt is not None and vt.rts > 0 else "-")

    footer = _footer(state)
    shown = min(state.levels, max(len(book.bids), len(book.asks)))
    depletion = book.depletion or None
    if height is not None:
        def rows(t: Text) -> int:
            return max(1, -(-t.cell_len // width)) if width else 1

        # head, book lines, notice; venues: header, rule, one row each; sides: title, blank,
        # header, rule, levels, blank; depletion: title, blank, header, rule, rows, blank; footer.
        fixed = sum(rows(t) for t in parts if isinstance(t, Text)) + 2 + len(book.venues) + 5 + rows(footer)
        depl_rows = 5 + sum(len(v) for v in depletion.values()) if depletion else 0
        if depletion and height - fixed - depl_rows < min(shown, 5):
            depletion, depl_rows = None, 0
        shown = max(1, min(shown, height - fixed - depl_rows))
    sides = Table.grid(expand=True, padding=(0, 2))
    sides.add_column(ratio=1)
    sides.add_column(ratio=1)
    sides.add_row(_side_table("BIDS", book.bids, shown, True), _side_table("ASKS", book.asks, shown, False))
    parts += [venues, sides]
    if depletion:
        parts.append(_depletion_table(depletion))
    parts.append(footer)
    return Group(*parts)


def _depletion_table(depl: dict[str, dict[Decimal, DepletionSummary]]) -> Table:
    t = Table(title="cost to trade (merged book, streamed)", box=box.SIMPLE_HEAD, pad_edge=False,
              title_justify="left", title_style="bold")
    for c in ("side", "size", "vwap", "worst", "slippage bps", "levels", "cost"):
        t.add_column(c, justify="left" if c == "side" else "right", no_wrap=True)
    for side in ("buy", "sell"):
        for size, d in (depl.get(side) or {}).items():
            side_text = Text(side, style="green" if side == "buy" else "red")
            if d.vwap is None:
                t.add_row(side_text, fmt(size), Text("no liquidity", style="red"), "-", "-", "-", "-")
                continue
            size_text = Text(fmt(size))
            if d.partial:
                size_text.append(f" PARTIAL {fmt(d.filled)}", style="bold red")
            t.add_row(side_text, size_text, fmt(d.vwap), fmt(d.worst) if d.worst is not None else "-",
                      fmt(d.slippage_bps) if d.slippage_bps is not None else "-", str(d.levels), _cost(d))
    return t


def _footer(state: WatchState) -> Text:
    t = Text(style="dim")
    for key, what in (("q", "quit"), ("Tab/→", "next"), ("←/p", "prev"), ("1-9", "symbol"),
                      ("+/-", f"levels ({state.levels})")):
        if t:
            t.append("  ")
        t.append(key, style="bold")
        t.append(" " + what)
    return t
