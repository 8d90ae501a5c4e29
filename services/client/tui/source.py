"""Where the live view's books come from: the client library (:mod:`common.subscriber`) in a
background thread.

The thread owns its subscription and puts ``("book", generation, book)`` on the view's queue;
:meth:`Source.switch` changes the symbol (a new subscription and a new generation, so books of the
old symbol still in the queue are recognised and dropped). ``("drops", generation, malformed)``
reports the subscription's count of malformed snapshots when it grows; ``("error", text)`` that
the thread stopped on an unexpected error. The view never touches a socket.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from common.subscriber import CurveKeys, Subscription, SubscriptionTimeout, subscribe

# Timeouts
POLL_S = 0.25   # the thread notices a switch or close within this (it blocks in the library meanwhile)


class Source:
    """Subscribes to one symbol at a time in a daemon thread; books go to ``out``."""

    def __init__(self, endpoint: str, out: queue.Queue[tuple[Any, ...]], *,
                 curve: CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.out = out
        self.curve = curve
        self._want: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def switch(self, symbol: str) -> int:
        """Subscribe to ``symbol`` instead (the first call starts the thread); returns the new
        generation number, which tags every message put on ``out`` for it."""
        with self._lock:
            gen = (self._want[1] + 1) if self._want else 1
            self._want = (symbol, gen)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="watch-source", daemon=True)
            self._thread.start()
        return gen

    def close(self) -> None:
        """Stop the thread (it closes its subscription); returns within about ``POLL_S``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * POLL_S + 1)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:   # shown by the view, which keeps running (q still quits)
            self.out.put(("error", f"subscription failed: {type(e).__name__}: {e}"))

    def _loop(self) -> None:
        sub: Subscription | None = None
        gen, malformed = 0, 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    want = self._want
                if want is not None and want[1] != gen:
                    if sub is not None:
                        sub.close()
                    sub = subscribe(self.endpoint, want[0], timeout=POLL_S, curve=self.curve)
                    gen, malformed = want[1], 0
                if sub is None:
                    self._stop.wait(POLL_S)
                    continue
                try:
                    self.out.put(("book", gen, sub.recv()))
                except SubscriptionTimeout:
                    pass
                if sub.malformed != malformed:
                    malformed = sub.malformed
                    self.out.put(("drops", gen, malformed))
        finally:
            if sub is not None:
                sub.close()
