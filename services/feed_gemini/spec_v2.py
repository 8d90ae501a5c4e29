"""Gemini market data v2 ``l2`` as a :class:`~common.feed.spec.FeedSpec` (configured alternative;
Gemini documents v2 as archived, but it is what the real recording holds).

One connection at ``cfg.ws_url`` (``wss://api.gemini.com/v2/marketdata``), one ``l2``
subscription naming every symbol. Each symbol's first ``l2_updates`` is its full book (a
:class:`~common.feed.types.Snapshot`: the core replaces the book), later ones are diffs. There is
no sequence: :class:`~common.feed.sync.StreamSequencer`; the venue's ~5 s heartbeat is the
liveness signal, a crossed book the one visible sign of a lost update.

Why resync = RECONNECT and not RESUBSCRIBE: the docs promise the book only as "the initial
response" to a subscription on a new connection; they say nothing of an unsubscribe/subscribe
on a live connection re-sending it (and a v1 client saw the initial book never come at all), so
only a new connection is known to bring a fresh book. Every symbol of the connection resyncs
then, which costs little: with no sequence the triggers are rare (crossed book, malformed frame,
silence), and silence already means a new connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.config import VenueConfig
from common.feed.spec import RECONNECT, STREAM, FeedSpec
from common.feed.sync import StreamSequencer
from common.feed.types import PairInfo
from services.feed_gemini import pairs, parse_v2
from services.feed_gemini.spec_ws import SNAPSHOT_TIMEOUT, details_url, pairs_url


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    return cfg.ws_url


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    """One ``l2`` subscription for every symbol of the connection."""
    return [parse_v2.subscribe_frame(list(keys))] if keys else []


def parse_pairs(text: str | bytes) -> pairs.ListedSymbols:
    return pairs.parse_symbols(text, parse_v2.key_of)


def parse_pair(text: str | bytes, symbol: str) -> PairInfo | None:
    """As :func:`services.feed_gemini.spec_ws.parse_pair`, with v2's key spelling."""
    d = pairs.parse_details(text, symbol, parse_v2.key_of)
    return d.info if d is not None else None


__all__ = ["SPEC", "details_url", "parse_pair", "parse_pairs", "subscribe", "ws_url"]

SPEC = FeedSpec(
    kind="gemini",
    key_of=parse_v2.key_of,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse_v2.parse_frame,
    pairs_url=pairs_url,
    parse_pairs=parse_pairs,
    pair_url=details_url,
    parse_pair=parse_pair,
    sequencer=StreamSequencer,
    snapshot=STREAM,
    resync=RECONNECT,
    snapshot_timeout=SNAPSHOT_TIMEOUT,
    id_name="updates since the book",
    heartbeat_frame=None,  # the server sends {"type":"heartbeat"} about every 5 s
    resync_on_crossed=True,
    options={},
)
