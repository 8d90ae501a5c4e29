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

from common.book import Book
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
        """BUFFERED before a snapshot (DROP for venues whose book comes in-band: an update before
        the snapshot belongs to an older subscription); afterwards APPLY, DROP or GAP. SNAPSHOT
        when this event is itself the venue's initial book (Gemini)."""

    def on_snapshot(self, snap: Snapshot) -> tuple[Verdict, list[DepthEvent]]:
        """SYNCED with the buffered events to apply, REFETCH, or GAP."""


#: How a symbol's book is (re)built: from a REST snapshot, or from the snapshot the venue sends
#: in-band after a subscribe (Kraken, Coinbase, Gemini).
REST = "rest"
STREAM = "stream"
#: How one symbol is resynced: refetch its REST snapshot, unsubscribe/subscribe it on the same
#: connection (the other symbols go on), or reconnect (every symbol of the connection resyncs;
#: for venues whose initial book comes only with a new connection).
RESUBSCRIBE = "resubscribe"
RECONNECT = "reconnect"


@dataclass(frozen=True)
class FeedSpec:
    """A venue for the feed core. Every callable is pure.

    * ``key_of(symbol)``: canonical ``BASE/QUOTE`` -> the venue's own symbol, used when the pair
      list is unavailable (otherwise the pair list's mapping wins);
    * ``ws_url(cfg, keys)``: the WebSocket URL for one connection carrying ``keys``;
    * ``subscribe(cfg, keys)``: text frames to send once connected (may be empty);
    * ``parse_frame(text)``: one :data:`~common.feed.types.Frame` or a list of them, or
      ``ParseError``;
    * ``snapshot_url(cfg, key)`` / ``parse_snapshot(text, key)``: the REST book (``snapshot ==
      REST`` only);
    * ``resubscribe(cfg, key)``: frames that make the venue send ``key``'s book again (``resync ==
      RESUBSCRIBE``), e.g. an unsubscribe then a subscribe;
    * ``pairs_url(cfg)`` / ``parse_pairs(text)``: the venue's instrument list (``pairs_url`` may
      return None: no REST pair check for this venue);
    * ``sequencer()``: a fresh per-symbol sequencer;
    * ``checksum(book, precision)``: the venue's integrity value of ``book`` (top of the book, as
      Kraken defines it); checked after every applied message whose event or snapshot carries a
      ``checksum``; ``precision`` is ``(price decimals, qty decimals)`` from an INSTRUMENT control
      or the ``precision`` option, else None (then the wire exponent of each Decimal is used);
    * ``depth_limit(cfg)``: levels per side the venue gives at most (REST limit, subscribed depth),
      None for the whole book. A side that holds that many levels is known exactly only down to
      its last price; deeper levels may exist.
    """

    kind: str
    key_of: Callable[[str], str]
    ws_url: Callable[[VenueConfig, Sequence[str]], str]
    subscribe: Callable[[VenueConfig, Sequence[str]], list[str]]
    parse_frame: Callable[[str | bytes], Frame | list[Frame]]
    pairs_url: Callable[[VenueConfig], str | None]
    parse_pairs: Callable[[str | bytes], Mapping[str, PairInfo]]
    sequencer: Callable[[], Sequencer]
    #: Where books come from: REST (``snapshot_url``/``parse_snapshot``) or STREAM.
    snapshot: str = REST
    snapshot_url: Callable[[VenueConfig, str], str] | None = None
    parse_snapshot: Callable[[str | bytes, str], Snapshot] | None = None
    #: How one symbol resyncs (gap, checksum mismatch, crossed book, malformed update): REST,
    #: RESUBSCRIBE or RECONNECT.
    resync: str = REST
    resubscribe: Callable[[VenueConfig, str], list[str]] | None = None
    #: STREAM books: a symbol still without its book this long after (re)subscribing resyncs again.
    snapshot_timeout: float = 10.0
    #: Integrity check after every message (Kraken); None: the venue has none.
    checksum: Callable[[Book, tuple[int, int] | None], int] | None = None
    #: Frames carry a ConnSeq; a jump resyncs every symbol of the connection (by reconnecting).
    conn_seq: bool = False
    #: Keep each side at ``depth_limit(cfg)`` levels after every message (Kraken sends no delete for
    #: a level pushed out of its subscribed depth); removed levels are published as deletions.
    truncate: bool = False
    depth_limit: Callable[[VenueConfig], int | None] = field(default=lambda cfg: None)
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
    #: The values an option of ``options`` may take, where they are a fixed set (the config
    #: refuses any other at start; common/config.py types the rest by their default).
    option_values: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    #: A per-symbol pair check instead of the list (``pair_url(cfg, key)``; ``parse_pair(text,
    #: symbol)`` -> PairInfo, None when the venue does not list it; an HTTP 4xx answer = not listed).
    pair_url: Callable[[VenueConfig, str], str] | None = None
    parse_pair: Callable[[str | bytes, str], PairInfo | None] | None = None
    #: Checks the venue's config beyond the generic rules (e.g. Kraken's allowed depths); raises
    #: ``ConfigError`` naming the key.
    check_config: Callable[[VenueConfig], None] | None = None
