"""Logging set-up shared by every service: one line per event, to stderr (supervisord writes each
program's stderr to its own file under the run directory), and periodic counters."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any


def setup(service: str, level: str = "INFO") -> logging.Logger:
    """Configure the root logger once, in ``main``, and return the service's logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return logging.getLogger(service)


class Counters(Counter[str]):
    """Named event counters (drops, gaps, resyncs...) logged every ``every`` seconds when changed."""

    def __init__(self, log: logging.Logger, every: float = 30.0) -> None:
        super().__init__()
        self._log = log
        self._every = every
        self._next = time.monotonic() + every
        self._last: dict[str, int] = {}

    def maybe_log(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now < self._next:
            return
        self._next = now + self._every
        if dict(self) != self._last:
            self._last = dict(self)
            self._log.info("counters %s", " ".join(f"{k}={v}" for k, v in sorted(self.items())))


class RateLimitedLog:
    """Log a warning per key at most once every ``every`` seconds, counting what it held back."""

    def __init__(self, log: logging.Logger, every: float = 5.0) -> None:
        self._log = log
        self._every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self._every:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, held, self._every)
        self._log.warning(msg, *args)
