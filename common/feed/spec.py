"""What a venue supplies to the shared feed runner: a small frozen :class:`FeedSpec`.

Everything in a spec is pure (no sockets, no clock, no state): URLs are built from the venue's
:class:`~common.config.VenueConfig`, frames are parsed from text, and the sync rule lives in a
sequencer object made fresh per symbol by ``sequencer``. The runner (:mod:`common.feed.runner`)
does all the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.config import VenueConfig
from common.feed.types import DepthEvent, Frame, PairInfo, Snapshot, Verdict


class Sequencer(Protocol):
    """A venue's documented sync rule for one symbol (see each venue's ``sync.py``)."""

    def reset(self) -> None:
        """Forget the snapshot and the buffer: start buffering again."""

    @property
    def buffered(self) -> int:
        """How many events wait for a snapshot."""

    @property
    def position(self) -> int | None:
        """The id the book is at (None while buffering), for logs."""

    def on_event(self, ev: DepthEvent) -> Verdict:
        """BUFFERED before a snapshot; afterwards APPLY, DROP or GAP."""

    def on_snapshot(self, snap: Snapshot) -> tuple[Verdict, list[DepthEvent]]:
        """SYNCED with the buffered events to apply, REFETCH, or GAP."""


@dataclass(frozen=True)
class FeedSpec:
    """A venue for the feed runner. Every callable is pure.

    * ``key_of(symbol)``: canonical ``BASE/QUOTE`` -> the venue's own symbol, used when the pair
      list is unavailable (otherwise the pair list's mapping wins);
    * ``ws_url(cfg, keys)``: the WebSocket URL for one connection carrying ``keys``;
    * ``subscribe(keys)``: text frames to send once connected (may be empty);
    * ``parse_frame(text)``: a :class:`DepthEvent` or :class:`Control`, or ``ParseError``;
    * ``snapshot_url(cfg, key)`` / ``parse_snapshot(text, key)``: the REST book;
    * ``pairs_url(cfg)`` / ``parse_pairs(text)``: the venue's instrument list;
    * ``sequencer()``: a fresh per-symbol sequencer.
    """

    kind: str
    key_of: Callable[[str], str]
    ws_url: Callable[[VenueConfig, Sequence[str]], str]
    subscribe: Callable[[Sequence[str]], list[str]]
    parse_frame: Callable[[str | bytes], Frame]
    snapshot_url: Callable[[VenueConfig, str], str]
    parse_snapshot: Callable[[str | bytes, str], Snapshot]
    pairs_url: Callable[[VenueConfig], str]
    parse_pairs: Callable[[str | bytes], Mapping[str, PairInfo]]
    sequencer: Callable[[], Sequencer]
    #: Name of the snapshot/event id in logs ("lastUpdateId", "microtimestamp").
    id_name: str = "id"
    #: Application-level keep-alive frame sent every ``heartbeat_every`` seconds (None: none).
    heartbeat_frame: str | None = None
    heartbeat_every: float = 5.0
    #: Reconnect before the venue cuts the connection (seconds; None: no limit).
    max_conn_age: float | None = None
    #: A crossed book after an update means the book is wrong: resync the symbol.
    resync_on_crossed: bool = True
    #: ``VenueConfig.options`` keys this venue understands, with their defaults.
    options: Mapping[str, object] = field(default_factory=dict)
