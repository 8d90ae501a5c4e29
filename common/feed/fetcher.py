"""REST for a feed process: blocking GETs run off the event loop, and the snapshot fetches the
feed core asks for (:class:`~common.feed.actions.Fetch`), at most ``rest_concurrency`` at once,
one in flight per symbol. A capturing core gets every answer recorded, in input order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import requests

from common.feed import rest
from common.feed.actions import Fetch
from common.feed.capture import CapturingCore
from common.feed.core import FeedCore


class RestClient:
    """GETs and snapshot fetches of one feed; :meth:`open` on the loop, :meth:`close` at the end."""

    def __init__(self, core: FeedCore, opts: dict[str, Any], drain: Callable[[], None]) -> None:
        self.core = core
        self.timeout = float(opts["rest_timeout"])
        self.concurrency = int(opts["rest_concurrency"])
        self.drain = drain          # after an answer: the transport carries out the core's outputs
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "bookmux-feed"
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rest")
        self.sem: asyncio.Semaphore | None = None
        self.fetches: dict[str, asyncio.Task[None]] = {}

    def open(self) -> None:
        self.sem = asyncio.Semaphore(self.concurrency)

    def close(self) -> None:
        self.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.session.close()

    async def get(self, url: str, symbol: str | None = None) -> tuple[bytes, int]:
        """GET ``url`` off the loop (``symbol``: a snapshot of it; None: the pair check). When
        capturing, the answer (or the error) is recorded here, on the loop, in input order."""
        loop = asyncio.get_running_loop()
        core = self.core
        if not isinstance(core, CapturingCore):
            return await loop.run_in_executor(self.executor, rest.get_text, self.session, url,
                                              self.timeout)
        try:
            body, rts = await loop.run_in_executor(self.executor, rest.get_text, self.session, url,
                                                   self.timeout)
        except rest.RestError as e:
            core.record_rest(url, symbol, e.status, None, str(e), getattr(e, "delay", None), time.time_ns())
            raise
        core.record_rest(url, symbol, 200, body, None, None, rts)
        return body, rts

    def start(self, f: Fetch) -> None:
        """Fetch ``f.symbol``'s snapshot after ``f.delay`` (replacing one still scheduled)."""
        old = self.fetches.get(f.symbol)
        if old is not None and not old.done() and old is not asyncio.current_task():
            old.cancel()
        self.fetches[f.symbol] = asyncio.create_task(self._fetch(f), name=f"snapshot {f.symbol}")

    def cancel(self) -> None:
        """Drop every fetch (the connection ended: the core ignores answers now anyway)."""
        for t in self.fetches.values():
            t.cancel()
        self.fetches.clear()

    async def _fetch(self, f: Fetch) -> None:
        assert self.sem is not None and self.core.spec.snapshot_url is not None
        if f.delay > 0:
            await asyncio.sleep(f.delay)
        st = self.core.streams[f.symbol]
        url = self.core.spec.snapshot_url(self.core.cfg, st.key)
        try:
            async with self.sem:
                body, rts = await self.get(url, f.symbol)
        except rest.RateLimited as e:
            self.core.snapshot_failed(f.symbol, str(e), e.delay)
        except rest.RestError as e:
            self.core.snapshot_failed(f.symbol, str(e))
        else:
            self.core.snapshot_body(f.symbol, body, rts)
        self.drain()
