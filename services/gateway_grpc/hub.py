"""Fan-out of the newest book of each symbol to any number of stream clients (asyncio, no I/O).

Each client has a :class:`Mailbox` that holds at most one item, the newest: a client that reads
slower than books arrive skips intermediate states (each book is a full state, so it only misses
changes in between), and its memory is bounded by that one item whatever it does. Publishing is
O(clients of that symbol) slot assignments and never waits for a client, so a slow or stalled
client cannot slow the others or the reader. A client that leaves (its stream ends, is cancelled
or its peer disconnects) is removed from the hub in the ``finally`` of its stream loop.

Items are opaque to the hub; each symbol's :class:`Channel` also memoises encodings of its newest
book (``encoded``) so N clients of one symbol and depth cost one conversion, not N.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any


class Mailbox:
    """A one-slot queue keeping the newest item: :meth:`put` never blocks and replaces an item
    not yet taken (counted in :attr:`skipped`); :meth:`get` waits for an item."""

    __slots__ = ("_event", "_item", "skipped", "taken")

    def __init__(self) -> None:
        self._item: Any = None
        self._event = asyncio.Event()
        self.skipped = 0
        self.taken = 0

    def put(self, item: Any) -> None:
        if self._item is not None:
            self.skipped += 1
        self._item = item
        self._event.set()

    async def get(self) -> Any:
        while self._item is None:
            await self._event.wait()
            self._event.clear()
        item, self._item = self._item, None
        self.taken += 1
        return item


class Channel:
    """One symbol: its newest item, its clients' mailboxes and the encodings of the newest item."""

    __slots__ = ("_encoded", "boxes", "latest")

    def __init__(self) -> None:
        self.latest: Any = None
        self.boxes: set[Mailbox] = set()
        self._encoded: dict[Hashable, Any] = {}

    def encoded(self, item: Any, key: Hashable, encode: Callable[[Any], Any]) -> Any:
        """``encode(item)``, computed once per (newest item, key); an older item is encoded afresh."""
        if item is not self.latest:
            return encode(item)
        if key not in self._encoded:
            self._encoded[key] = encode(item)
        return self._encoded[key]


class Hub:
    """Symbols -> :class:`Channel`. ``publish`` from the reader, ``join``/``leave`` per stream."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.published = 0

    def channel(self, symbol: str) -> Channel:
        ch = self.channels.get(symbol)
        if ch is None:
            ch = self.channels[symbol] = Channel()
        return ch

    def publish(self, symbol: str, item: Any) -> None:
        """Make ``item`` the newest of ``symbol`` and offer it to every client of the symbol."""
        ch = self.channel(symbol)
        ch.latest = item
        ch._encoded.clear()
        self.published += 1
        for box in ch.boxes:
            box.put(item)

    def join(self, symbol: str) -> Mailbox:
        """A new client of ``symbol``: its mailbox, holding the newest item at once if there is one."""
        ch = self.channel(symbol)
        box = Mailbox()
        if ch.latest is not None:
            box.put(ch.latest)
        ch.boxes.add(box)
        return box

    def leave(self, symbol: str, box: Mailbox) -> None:
        """The client of ``box`` is gone: nothing refers to its mailbox any more."""
        ch = self.channels.get(symbol)
        if ch is not None:
            ch.boxes.discard(box)

    def clients(self) -> dict[str, int]:
        """Open streams per symbol (symbols with none left out)."""
        return {s: len(ch.boxes) for s, ch in self.channels.items() if ch.boxes}
