"""Bitstamp as a :class:`~common.feed.spec.FeedSpec`: one connection, one ``bts:subscribe`` per
pair, ``bts:heartbeat`` every few seconds (the reply is liveness), REST full-depth order book,
``trading-pairs-info`` as the pair list."""

from __future__ import annotations

from collections.abc import Sequence

from common.config import VenueConfig
from common.feed.spec import FeedSpec
from services.feed_bitstamp import parse
from services.feed_bitstamp.sync import BitstampSequencer


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    return cfg.ws_url


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    return [parse.subscribe_frame(k) for k in keys]


def snapshot_url(cfg: VenueConfig, key: str) -> str:
    return f"{cfg.rest_url.rstrip('/')}/order_book/{key}/"


def pairs_url(cfg: VenueConfig) -> str:
    return f"{cfg.rest_url.rstrip('/')}/trading-pairs-info/"


SPEC = FeedSpec(
    kind="bitstamp",
    key_of=parse.key_of,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse.parse_frame,
    snapshot_url=snapshot_url,
    parse_snapshot=parse.parse_snapshot,
    pairs_url=pairs_url,
    parse_pairs=parse.parse_pairs,
    sequencer=BitstampSequencer,
    id_name="microtimestamp",
    heartbeat_frame=parse.HEARTBEAT,
    heartbeat_every=5.0,
    max_conn_age=None,
    resync_on_crossed=True,  # no sequence numbers: a crossed book is the one visible sign of a loss
)
