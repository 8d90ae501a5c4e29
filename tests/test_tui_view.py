"""The full-screen watch view's pure core (redraw rate with an injected clock, state, keys,
rendering), its dispatch between plain and full-screen output, and its subscription thread."""

from __future__ import annotations

import argparse
import io
import itertools
import queue
import time
from decimal import Decimal as D
from typing import Any

import pytest
import zmq
from rich.console import Console

from common import schema
from common.ports import free_port
from common.schema import DepletionSummary, Level, MergedBook, VenueTimes
from services.client import tui
from services.client.tui import view
from services.client.tui.source import Source
from services.client.tui.view import RateMeter, RedrawLimiter, WatchState, parse_keys, render


class Clock:
    """A settable monotonic clock (seconds)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def drive(lim: RedrawLimiter, clock: Clock, events: list[float], until: float) -> list[float]:
    """The app loop in simulated time: wake at the next event or when the limiter says a draw may
    be due, whichever is first; apply the event; draw when due. Returns the draw times."""
    draws: list[float] = []
    i = 0
    while clock.t < until:
        if lim.due():
            lim.drawn()
            draws.append(clock.t)
        wake = lim.next_due()
        if i < len(events) and events[i] <= wake:
            clock.t = events[i]
            while i < len(events) and events[i] <= clock.t:   # the loop drains the queue
                lim.changed()
                i += 1
        else:
            clock.t = wake
    return draws


def per_second(draws: list[float], seconds: int) -> list[int]:
    return [sum(1 for t in draws if k <= t < k + 1) for k in range(seconds)]


@pytest.mark.parametrize("max_hz", [10.0, 20.0])
def test_redraw_rate_held_between_1_and_20_under_10x_traffic(max_hz: float) -> None:
    """1000 updates/s for 10 simulated seconds: every second has 1..20 redraws, never two
    closer than 1/max_hz."""
    clock = Clock()
    lim = RedrawLimiter(max_hz, clock=clock)
    events = [k / 1000 for k in range(1, 10_000)]
    draws = drive(lim, clock, events, until=10.0)
    counts = per_second(draws, 10)
    assert all(1 <= c <= 20 for c in counts), counts
    assert all(c <= max_hz for c in counts), counts
    assert min(b - a for a, b in itertools.pairwise(draws)) >= 1 / max_hz
    assert counts == [int(max_hz)] * 10


def test_redraw_rate_under_bursts() -> None:
    """10 000 updates in the first 10 ms of every second (10x traffic, bursty): 1..20 redraws a
    second, and the last update of a burst is drawn within 1/max_hz."""
    clock = Clock()
    lim = RedrawLimiter(10.0, clock=clock)
    events = [s + k / 1_000_000 for s in range(10) for k in range(0, 10_000)]
    draws = drive(lim, clock, events, until=10.0)
    counts = per_second(draws, 10)
    assert all(1 <= c <= 20 for c in counts), counts
    for s in range(10):
        last = s + 9_999 / 1_000_000
        assert any(last <= t <= last + lim.min_interval for t in draws), s


def test_redraw_once_a_second_when_idle() -> None:
    """No updates: one redraw a second (ages and 'no snapshot for' keep ticking)."""
    clock = Clock()
    lim = RedrawLimiter(10.0, clock=clock)
    draws = drive(lim, clock, [], until=10.0)
    assert draws == [float(k) for k in range(10)]


def test_redraw_limiter_wait_and_due() -> None:
    """wait() says how long until due(); a change shortens it to 1/max_hz from the last draw."""
    clock = Clock()
    lim = RedrawLimiter(10.0, clock=clock)
    assert lim.due() and lim.wait() == 0.0
    lim.drawn()
    assert not lim.due() and lim.wait() == 1.0
    clock.t = 0.04
    lim.changed()
    assert not lim.due() and lim.wait() == pytest.approx(0.06 + view.EPSILON)
    clock.t = 0.1
    assert not lim.due()
    clock.t = lim.next_due()
    assert lim.due() and lim.wait() == 0.0
    with pytest.raises(ValueError, match="max_hz must be between 1 and 20"):
        RedrawLimiter(21.0)
    with pytest.raises(ValueError, match="max_hz must be between 1 and 20"):
        RedrawLimiter(0.5)


def test_rate_meter_counts_a_sliding_window() -> None:
    """Events per second over the last 2 s."""
    r = RateMeter(2.0)
    for k in range(100):
        r.add(k / 50)          # 50 per second for 2 s
    assert r.rate(1.99) == 50.0
    assert r.rate(3.0) == 24.5
    assert r.rate(10.0) == 0.0


def test_parse_keys() -> None:
    """Escape sequences stay whole, other characters are one key each."""
    assert parse_keys("q\x1b[Cn+-\t\x1b[Z") == ["q", "\x1b[C", "n", "+", "-", "\t", "\x1b[Z"]
    assert parse_keys("") == []
    assert parse_keys("\x1b") == ["\x1b"]
    assert parse_keys("\x1bOC\x1bODq") == ["\x1bOC", "\x1bOD", "q"]


def book(symbol: str = "BTC/USDT", *, epoch: int = 7, seq: int = 1, missed: int = 0, new_epoch: bool = False,
         venue_ts: dict[str, VenueTimes] | None = None) -> MergedBook:
    depl = {"buy": {D("1"): DepletionSummary(D("1"), D("43000.51"), D("43001"), D("1.2"), 2, False)},
            "sell": {D("5"): DepletionSummary(D("3"), D("42999"), D("42998"), D("0.3"), 4, True)}}
    return MergedBook(symbol, epoch, seq, 1_000, D("0.01"),
                      [Level(D("43000"), D("1.5"), "binance"), Level(D("42999.5"), D("2"), "bitstamp")],
                      [Level(D("43000.01"), D("0.25"), "bitstamp"), Level(D("43001"), D("3"), "binance")],
                      {"binance": "live", "bitstamp": "syncing"}, depletion=depl, venue_ts=venue_ts,
                      missed=missed, new_epoch=new_epoch)


def text(state: WatchState, now: float, now_ns: int, width: int = 160, height: int | None = None) -> str:
    c = Console(width=width, height=50, record=True, force_terminal=True, color_system="standard", file=io.StringIO())
    c.print(render(state, now, now_ns, width, height))
    return c.export_text()


def deep_book() -> MergedBook:
    b = book(venue_ts={"binance": VenueTimes(1, 1, 1)})
    b.bids = [Level(D(43000 - k), D(1), "binance") for k in range(10)]
    b.asks = [Level(D(43001 + k), D(1), "bitstamp") for k in range(10)]
    return b


@pytest.mark.parametrize("width,height,levels,depletion", [
    (160, 50, 10, True), (80, 24, 10, False), (80, 30, 9, True), (60, 20, 5, False)])
def test_the_view_fits_the_terminal(width: int, height: int, levels: int, depletion: bool) -> None:
    """Fewer levels on a small terminal (the cost table goes first), the keys line always shown."""
    st = WatchState(["BTC/USDT", "ETH/USDT"], "tcp://x", started=0.0)
    st.on_book(deep_book(), 1.0, 10**18)
    out = text(st, 1.0, 10**18, width, height).splitlines()
    assert len(out) <= height, "\n".join(out)
    assert out[-1].startswith("q quit"), out[-1]
    assert sum(1 for ln in out if " 1 " in ln and "binance" in ln and "bitstamp" in ln) == levels
    assert any("cost to trade" in ln for ln in out) is depletion


def test_state_counts_missed_and_new_epochs_from_the_subscriber() -> None:
    """book.missed adds up; book.new_epoch is counted and shown for a while."""
    st = WatchState(["BTC/USDT"], "tcp://x", started=0.0)
    st.on_book(book(seq=1), 1.0, 10**18)
    st.on_book(book(seq=4, missed=2), 1.1, 10**18)
    assert (st.stats.missed, st.stats.epochs, st.stats.received) == (2, 0, 2)
    st.on_book(book(epoch=8, seq=1, new_epoch=True), 2.0, 10**18)
    assert (st.stats.missed, st.stats.epochs, st.stats.epoch_at) == (2, 1, 2.0)
    out = text(st, 3.0, 10**18)
    assert "missed seq 2" in out and "epoch 8 seq 1" in out and "NEW EPOCH 1.0 s ago" in out
    assert "NEW EPOCH" not in text(st, 2.0 + view.NEW_EPOCH_SHOWN, 10**18)


def test_render_book_spread_mid_venues_depletion() -> None:
    """The book line, venue statuses with last heard, both sides, the streamed cost."""
    now_ns = 50 * 10**9
    st = WatchState(["BTC/USDT", "ETH/USDT"], "tcp://x", started=0.0)
    st.on_book(book(venue_ts={"binance": VenueTimes(0, now_ns - 12 * 10**9, now_ns - 300_000_000)}), 1.0,
               now_ns - 2 * 10**9)
    out = text(st, 1.5, now_ns)
    assert "BTC/USDT   spread 0.01   mid 43000.005   best bid 43000   best ask 43000.01" in out
    assert "0.5 updates/s   missed seq 0   epoch 7 seq 1   age 50000 ms   last snapshot 0.5 s ago" in out
    lines = out.splitlines()
    # heard and book updated from venue_ts: a quiet market (heard recently, book unchanged for 12 s)
    assert any(ln.split() == ["binance", "live", "0.3", "s", "ago", "12", "s", "ago"] for ln in lines), out
    assert any(ln.split() == ["bitstamp", "syncing", "-", "-"] for ln in lines), out    # never live, no venue_ts
    assert any(ln.split() == ["binance", "1.5", "43000", "43000.01", "0.25", "bitstamp"] for ln in lines), out
    assert any(ln.split() == ["buy", "1", "43000.51", "43001", "1.2", "2", "≈43000.51"] for ln in lines), out
    assert any(ln.split() == ["sell", "5", "PARTIAL", "3", "42999", "42998", "0.3", "4", "≈128997"]
               for ln in lines), out
    assert "1:BTC/USDT" in out and "2:ETH/USDT" in out and "levels (10)" in out


def test_heard_falls_back_to_the_statuses() -> None:
    """Without venue_ts a venue was last heard when a snapshot last showed it live."""
    st = WatchState(["BTC/USDT"], "tcp://x", started=0.0)
    st.on_book(book(), 1.0, 10 * 10**9)
    assert st.heard_ns("binance") == 10 * 10**9 and st.heard_ns("bitstamp") is None
    lines = text(st, 1.0, 12 * 10**9).splitlines()
    assert any(ln.split() == ["binance", "live", "2.0", "s", "ago", "-"] for ln in lines)


def test_nothing_arrives_is_said_clearly() -> None:
    """Before the first book: waiting, then 'no snapshot for N s'; after books stop: the same."""
    st = WatchState(["BTC/USDT"], "tcp://127.0.0.1:9", timeout=5.0, started=10.0)
    assert "waiting for the first snapshot of BTC/USDT on tcp://127.0.0.1:9 (2.0 s)" in text(st, 12.0, 0)
    assert "no snapshot for 7 s: is the publisher running on tcp://127.0.0.1:9?" in text(st, 17.0, 0)
    st.on_book(book(), 20.0, 10**18)
    assert "no snapshot" not in text(st, 24.0, 10**18)
    out = text(st, 26.0, 10**18)
    assert "no snapshot for 6 s (showing the last one)" in out and "BTC/USDT   spread 0.01" in out
    st.error = "subscription failed: ZMQError: boom"
    assert "subscription failed: ZMQError: boom (q quits)" in text(st, 26.0, 10**18)


def test_keys_switch_symbol_levels_and_quit() -> None:
    """Tab/arrows/n/p/digits walk the symbols (wrapping; a switch forgets the old book), +/- the
    levels within 1..50, q quits."""
    st = WatchState(["BTC/USDT", "ETH/USDT", "SOL/USDT"], "tcp://x", levels=2)
    st.on_book(book(missed=3), 1.0, 1)
    assert st.on_key("\t", 2.0) == view.NEXT and st.symbol == "ETH/USDT"
    assert st.book is None and st.stats.missed == 0 and st.started == 2.0
    assert st.on_key("\x1b[C", 2.0) == view.NEXT and st.symbol == "SOL/USDT"
    assert st.on_key("\x1bOC", 2.0) == view.NEXT and st.symbol == "BTC/USDT"
    assert st.on_key("n", 2.0) == view.NEXT and st.symbol == "ETH/USDT"
    assert st.on_key("\x1bOD", 2.0) == view.PREV and st.symbol == "BTC/USDT"
    assert st.on_key("p", 2.0) == view.PREV and st.symbol == "SOL/USDT"
    assert st.on_key("\x1b[Z", 2.0) == view.PREV and st.symbol == "ETH/USDT"
    assert st.on_key("1", 2.0) == view.NEXT and st.symbol == "BTC/USDT"
    assert st.on_key("1", 2.0) is None and st.on_key("9", 2.0) is None and st.symbol == "BTC/USDT"
    assert [st.on_key("-", 2.0) for _ in range(3)] == [view.FEWER] * 3 and st.levels == 1
    for _ in range(60):
        st.on_key("+", 2.0)
    assert st.levels == view.MAX_LEVELS
    assert st.on_key("x", 2.0) is None
    assert st.on_key("q", 2.0) == view.QUIT


def test_levels_shown_follow_plus_and_minus() -> None:
    """Fewer levels: fewer rows on each side."""
    st = WatchState(["BTC/USDT"], "tcp://x", levels=1)
    st.on_book(book(), 1.0, 1)
    out = text(st, 1.0, 1)
    assert "43000.01" in out and "43001" not in out.replace("43001 ", "").split("cost to trade")[0]
    st.on_key("+", 1.0)
    assert "42999.5" in text(st, 1.0, 1)


def test_venue_colours_are_distinct_and_stable() -> None:
    """Known venues have fixed distinct colours; others a stable one."""
    known = [view.venue_colour(v) for v in ("binance", "bitstamp", "kraken", "coinbase", "gemini")]
    assert len(set(known)) == 5
    assert view.venue_colour("some_venue") == view.venue_colour("some_venue") in view.PALETTE


def test_symbol_list() -> None:
    """The watched symbol first when the list lacks it; --symbols overrides the config."""
    assert tui.symbol_list("BTC/USDT", None, None) == (["BTC/USDT"], 0)
    assert tui.symbol_list("ETH/USDT", None, "btc/usdt,ETH/USDT") == (["BTC/USDT", "ETH/USDT"], 1)
    assert tui.symbol_list("SOL/USDT", None, "BTC/USDT") == (["SOL/USDT", "BTC/USDT"], 0)


def args(**kw: Any) -> argparse.Namespace:
    base = {"symbol": "BTC/USDT", "endpoint": "tcp://127.0.0.1:9", "count": 0, "timeout": 10.0, "no_clear": False,
            "server_key": None, "client_key": None, "plain": False, "watch_config": None, "watch_symbols": None,
            "levels": None, "fps": 10.0}
    base.update(kw)
    return argparse.Namespace(**base)


def test_plain_output_off_a_terminal_or_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """--plain, --count, --no-clear or a stdout that is not a terminal: today's plain watch."""
    from services.client import watch
    from services.client.tui import app

    calls: list[str] = []
    monkeypatch.setattr(watch, "run", lambda a: calls.append("plain") or 0)
    monkeypatch.setattr(app, "run", lambda **kw: calls.append(f"tui {kw['symbols']} {kw['index']}") or 0)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert tui.run(args()) == 0
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    for kw in ({"plain": True}, {"count": 3}, {"no_clear": True}):
        assert tui.run(args(**kw)) == 0
    assert tui.run(args(symbol="eth/usdt", watch_symbols="BTC/USDT,ETH/USDT")) == 0
    assert calls == ["plain"] * 4 + ["tui ['BTC/USDT', 'ETH/USDT'] 1"]
    assert tui.run(args(fps=50.0)) == 2
    assert tui.run(args(server_key="k")) == 2
    assert tui.run(args(watch_symbols="BTC-USDT")) == 2
    assert tui.run(args(watch_config="/nonexistent.toml")) == 2
    assert tui.run(args(endpoint="foo:bar")) == 2
    assert len(calls) == 5


def test_source_follows_the_symbol_switch() -> None:
    """The subscription thread yields typed books of the current symbol only, tagged with its
    generation; after a switch only the new symbol's books come."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub.bind(endpoint)
    out: queue.Queue[tuple[Any, ...]] = queue.Queue()
    src = Source(endpoint, out)
    try:
        def until(symbol: str, gen: int) -> MergedBook:
            seq = itertools.count(1)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for s in ("BTC/USDT", "BTC/USDTX", "ETH/USDT"):
                    pub.send_multipart(schema.encode_merged(book(s, seq=next(seq))))
                try:
                    ev = out.get(timeout=0.1)
                except queue.Empty:
                    continue
                assert ev[0] == "book"
                if ev[1] == gen:
                    assert ev[2].symbol == symbol
                    return ev[2]
            raise AssertionError(f"no {symbol} book")
        g1 = src.switch("BTC/USDT")
        b = until("BTC/USDT", g1)
        assert b.bids[0] == Level(D("43000"), D("1.5"), "binance") and b.spread == D("0.01")
        g2 = src.switch("ETH/USDT")
        assert g2 == g1 + 1
        assert until("ETH/USDT", g2).symbol == "ETH/USDT"
    finally:
        src.close()
        pub.close(0)
        ctx.term()
