"""Kraken WebSocket v1 as a :class:`~common.feed.spec.FeedSpec` (a configured alternative:
``api = "v1"``).

Same rule as v2 (:mod:`services.feed_kraken.spec_v2`): in-band snapshot, truncate to
``cfg.depth``, CRC32 after every message, resync one symbol by unsubscribe + subscribe. v1
differences: ``wss://ws.kraken.com``, names ``XBT/USD`` / ``XDG/USD`` (AssetPairs ``wsname``), array
messages, no checksum on the snapshot (the first update verifies it), no ``instrument`` channel:
prices and volumes are quoted fixed-decimal strings, so each value's own text gives the digits.
Ping ``{"event":"ping"}`` every 10 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from common.config import VenueConfig
from common.feed.types import PairInfo
from services.feed_kraken import pairs, parse_v1, spec_v2
from services.feed_kraken.spec_common import DEPTHS, validate

__all__ = ["DEPTHS", "SPEC", "validate"]


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    return [parse_v1.subscribe_book(list(keys), cfg.depth)]


def resubscribe(cfg: VenueConfig, key: str) -> list[str]:
    """Unsubscribe then subscribe ``key`` alone: Kraken answers with a fresh snapshot."""
    return [parse_v1.unsubscribe_book([key], cfg.depth), parse_v1.subscribe_book([key], cfg.depth)]


def parse_pairs(text: str | bytes) -> Mapping[str, PairInfo]:
    return pairs.parse_asset_pairs(text, v1=True)


#: v2's spec with v1's names, frames and subscriptions; the sync rule is the same.
SPEC = replace(
    spec_v2.SPEC,
    key_of=pairs.v1_name,
    subscribe=subscribe,
    parse_frame=parse_v1.parse_frame,
    parse_pairs=parse_pairs,
    resubscribe=resubscribe,
    heartbeat_frame=parse_v1.PING,
)
