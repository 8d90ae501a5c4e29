"""Kraken WebSocket v2 as a :class:`~common.feed.spec.FeedSpec` (the default API).

* one connection (``cfg.ws_url``, live ``wss://ws.kraken.com/v2``) carrying every symbol:
  on connect the ``instrument`` channel (each pair's ``price_precision``/``qty_precision``, the
  digits the checksum is computed over) and the ``book`` channel at ``cfg.depth`` with
  ``snapshot: true``;
* books come in-band (``snapshot=STREAM``) and are sequenced by
  :class:`~common.feed.sync.StreamSequencer` (Kraken numbers nothing); every side is truncated to
  ``cfg.depth`` after each message and Kraken's CRC32 (:func:`checksum.checksum`) is verified
  after each one: a mismatch resyncs that symbol alone by unsubscribe + subscribe
  (``resync=RESUBSCRIBE``);
* an application ping every 10 s (the pong and the server's ``heartbeat`` channel are liveness);
* pair check: REST AssetPairs, mapped by ``wsname`` (``XBT/USD`` -> ``BTC/USD``, ``XDG`` ->
  ``DOGE``). Chosen over the instrument channel because it answers before any connection and
  gives the core one list to mark unlisted symbols ``down`` with; a symbol it misses is still
  refused by the venue's subscribe error (SYMBOL_ERROR).
* a crossed book does not resync: the checksum after every message is the integrity check, and a
  crossed book that verifies is the venue's own (resubscribing would fetch it again, in a loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from common.config import VenueConfig
from common.feed.spec import RESUBSCRIBE, STREAM, FeedSpec
from common.feed.sync import StreamSequencer
from common.feed.types import PairInfo
from services.feed_kraken import checksum, pairs, parse_v2
from services.feed_kraken.spec_common import DEPTHS, depth_limit, pairs_url, validate

__all__ = ["DEPTHS", "SPEC", "validate"]


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    return cfg.ws_url


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    """The instrument channel first (its snapshot usually lands before the books), then one book
    subscription for every symbol of the connection."""
    return [parse_v2.subscribe_instrument(), parse_v2.subscribe_book(list(keys), cfg.depth)]


def resubscribe(cfg: VenueConfig, key: str) -> list[str]:
    """Unsubscribe then subscribe ``key`` alone: Kraken answers with a fresh snapshot."""
    return [parse_v2.unsubscribe_book([key], cfg.depth), parse_v2.subscribe_book([key], cfg.depth)]


def parse_pairs(text: str | bytes) -> Mapping[str, PairInfo]:
    return pairs.parse_asset_pairs(text, v1=False)


SPEC = FeedSpec(
    kind="kraken",
    key_of=pairs.v2_name,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse_v2.parse_frame,
    pairs_url=pairs_url,
    parse_pairs=parse_pairs,
    sequencer=StreamSequencer,
    snapshot=STREAM,
    resync=RESUBSCRIBE,
    resubscribe=resubscribe,
    snapshot_timeout=10.0,
    checksum=checksum.checksum,
    truncate=True,
    depth_limit=depth_limit,
    id_name="update",  # Kraken numbers nothing: first/last are 0 in every event
    heartbeat_frame=parse_v2.PING,
    heartbeat_every=10.0,
    max_conn_age=None,
    resync_on_crossed=False,
    check_config=validate,
)
