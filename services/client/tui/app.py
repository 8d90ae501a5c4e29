"""The live terminal book's I/O: terminal, keys, the subscription thread, the redraw loop.

One queue joins everything: the subscription thread puts books on it, the key thread puts key
presses. The main thread blocks on the queue for at most as long as :class:`RedrawLimiter` allows
(never busy-polls), applies what arrived to :class:`WatchState`, and redraws with rich's ``Live``
on the alternate screen when the limiter says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live

from common.subscriber import CurveKeys
from services.client.tui.source import Source
from services.client.tui.view import QUIT, RedrawLimiter, WatchState, parse_keys, render


class KeyReader:
    """Reads key presses from a terminal in cbreak mode in a daemon thread; puts ``("keys", [..])``
    on ``out`` and ``("eof",)`` when the terminal closes. Restores the terminal on :meth:`close`."""

    def __init__(self, stream: TextIO, out: queue.Queue[tuple[Any, ...]]) -> None:
        self.fd = stream.fileno()
        self.out = out
        self.saved: list[Any] | None = None

    def start(self) -> None:
        """Start reading; a stdin that is not a terminal is not read (Ctrl-C still quits)."""
        if not os.isatty(self.fd):
            return
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        threading.Thread(target=self._run, name="watch-keys", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 64)
            except OSError:
                data = b""
            if not data:
                self.out.put(("eof",))
                return
            self.out.put(("keys", parse_keys(data.decode("utf-8", "replace"))))

    def close(self) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP leave the loop like ``q`` does, so the terminal is always restored."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(*, endpoint: str, symbols: list[str], index: int, levels: int = 10, max_hz: float = 10.0,
        timeout: float = 5.0, curve: CurveKeys | None = None, console: Console | None = None,
        stdin: TextIO | None = None) -> int:
    """Show the live book of ``symbols[index]`` full screen until ``q`` (or Ctrl-C, SIGTERM, the
    terminal closing). Returns 0."""
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    state = WatchState(symbols, endpoint, levels=levels, index=index, timeout=timeout, started=time.monotonic())
    limiter = RedrawLimiter(max_hz)
    source = Source(endpoint, events, curve=curve)
    gen = source.switch(state.symbol)
    keys = KeyReader(stdin or sys.stdin, events)
    console = console or Console()
    # The library logs dropped snapshots; the view counts them on screen instead (a log line on
    # stderr would tear the full-screen picture).
    quiet = logging.NullHandler()
    logging.getLogger("subscriber").addHandler(quiet)
    resized = [False]   # set by SIGWINCH (a plain flag: no lock inside a signal handler)

    def on_winch(signum: int, frame: Any) -> None:
        resized[0] = True

    old_winch = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with _terminate_as_exit(), Live(console=console, screen=True, auto_refresh=False,
                                        redirect_stdout=False, redirect_stderr=False) as live:
            keys.start()
            while True:
                try:
                    ev: tuple[Any, ...] | None = events.get(timeout=limiter.wait())
                except queue.Empty:
                    ev = None
                while ev is not None:
                    kind = ev[0]
                    if kind == "book" and ev[1] == gen:
                        state.on_book(ev[2], time.monotonic(), time.time_ns())
                        limiter.changed()
                    elif kind == "drops" and ev[1] == gen:
                        state.stats.dropped = ev[2]
                        limiter.changed()
                    elif kind == "error":
                        state.error = ev[1]
                        limiter.changed()
                    elif kind == "keys":
                        for k in ev[1]:
                            before = state.index
                            if state.on_key(k, time.monotonic()) == QUIT:
                                return 0
                            if state.index != before:
                                gen = source.switch(state.symbol)
                        limiter.changed()
                    elif kind == "eof":
                        return 0
                    try:
                        ev = events.get_nowait()
                    except queue.Empty:
                        ev = None
                if resized[0]:
                    resized[0] = False
                    limiter.changed()
                if limiter.due():
                    size = console.size
                    live.update(render(state, time.monotonic(), time.time_ns(), size.width, size.height),
                                refresh=True)
                    limiter.drawn()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        logging.getLogger("subscriber").removeHandler(quiet)
        keys.close()
        source.close()
