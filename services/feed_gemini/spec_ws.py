"""Gemini's current WebSocket API as a :class:`~common.feed.spec.FeedSpec` (the live default).

One connection for all symbols at ``<ws_url>?snapshot=-1`` (so each symbol's first
``depthUpdate`` after connecting is its full book), one SUBSCRIBE of ``<symbol>@depth@100ms`` per
symbol. The book comes in-band (snapshot = STREAM) and only with a new connection, so a gap
resyncs by reconnecting (resync = RECONNECT); a symbol whose initial book does not arrive within
``snapshot_timeout`` reconnects too. Pair check: the ``/v1/symbols`` list (see
:mod:`services.feed_gemini.pairs` for why it is looked up from our symbols, never split, and
for the per-symbol details endpoint that also knows the status).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from common.config import VenueConfig
from common.feed.spec import RECONNECT, STREAM, FeedSpec
from common.feed.types import PairInfo
from services.feed_gemini import pairs, parse_ws
from services.feed_gemini.sync import GeminiSequencer

#: Seconds a symbol may wait for its initial book after (re)connecting before we reconnect.
SNAPSHOT_TIMEOUT = 15.0


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    """``cfg.ws_url`` with ``snapshot=-1`` (the full initial book) in its query, other query
    parameters kept: ``wss://ws.gemini.com`` -> ``wss://ws.gemini.com?snapshot=-1``."""
    parts = urlsplit(cfg.ws_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "snapshot"]
    query.append(("snapshot", "-1"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    """One SUBSCRIBE per symbol, request ids 1..N. Not one request naming every stream: if the
    venue refuses a whole request for one unknown stream (undocumented either way), one bad
    symbol would keep every other one of the connection from its book, and the snapshot timeout
    would reconnect forever; per symbol, only that symbol is refused (SYMBOL_ERROR)."""
    speed = str(cfg.options.get("depth_speed", "100ms"))
    return [parse_ws.subscribe_frame([k], i, speed) for i, k in enumerate(keys, 1)]


def pairs_url(cfg: VenueConfig) -> str:
    return f"{cfg.rest_url.rstrip('/')}/v1/symbols"


def details_url(cfg: VenueConfig, key: str) -> str:
    """The per-symbol details endpoint (status, ticks): the pair check (``FeedSpec.pair_url``)."""
    return f"{cfg.rest_url.rstrip('/')}/v1/symbols/details/{pairs.venue_name(key)}"


def parse_pairs(text: str | bytes) -> pairs.ListedSymbols:
    return pairs.parse_symbols(text, parse_ws.key_of)


def parse_pair(text: str | bytes, symbol: str) -> PairInfo | None:
    """The details answer for canonical ``symbol`` -> its PairInfo (``trading`` from the status),
    None when the venue does not list that pair (the per-symbol pair check, ``FeedSpec.parse_pair``)."""
    d = pairs.parse_details(text, symbol, parse_ws.key_of)
    return d.info if d is not None else None


SPEC = FeedSpec(
    kind="gemini",
    key_of=parse_ws.key_of,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse_ws.parse_frame,
    pairs_url=pairs_url,
    parse_pairs=parse_pairs,
    pair_url=details_url,
    parse_pair=parse_pair,
    sequencer=GeminiSequencer,
    snapshot=STREAM,
    resync=RECONNECT,
    snapshot_timeout=SNAPSHOT_TIMEOUT,
    id_name="u",
    heartbeat_frame=None,  # no application heartbeat is documented; WebSocket pings keep it alive
    resync_on_crossed=True,
    options={"depth_speed": "100ms"},
    option_values={"depth_speed": ("100ms", "")},   # "": the 1000 ms stream
)
