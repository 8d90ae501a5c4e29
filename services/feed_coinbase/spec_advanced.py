"""Coinbase Advanced Trade ``level2`` as a :class:`~common.feed.spec.FeedSpec` (the default API).

* One connection carries every configured product; on connect the core sends a ``level2``
  subscribe for the products, then a ``heartbeats`` subscribe (one channel per message, within
  5 s of connecting, no auth).
* Books come in-band (``snapshot == STREAM``): each product's ``snapshot`` event replaces its book
  (:class:`~common.feed.sync.StreamSequencer`); ``update`` events apply after it, those before it
  are dropped. The BTC-USD snapshot is several MB: the WebSocket frame limit must allow it.
* ``conn_seq``: ``sequence_num`` counts every message of the connection, all channels together; a
  jump means lost messages of unknown products, so every product of the connection resyncs (the
  core reconnects). Checking it per product or per channel would raise false gaps.
* One product resyncs alone (crossed book, malformed event) by unsubscribing and subscribing it
  again (``RESUBSCRIBE``), which makes the venue send its snapshot again.
* Pair check: the public product list ``/api/v3/brokerage/market/products`` filtered to the
  configured products (``product_ids`` repeated), on the venue's ``rest_url``
  (``https://api.coinbase.com``).

Options: ``channel`` (default ``level2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

import orjson

from common.config import VenueConfig
from common.feed.spec import RESUBSCRIBE, STREAM, FeedSpec
from common.feed.sync import StreamSequencer
from services.feed_coinbase import parse_advanced as parse
from services.feed_coinbase import wire

PRODUCTS_PATH = "/api/v3/brokerage/market/products"


def _channel(cfg: VenueConfig) -> str:
    return str(cfg.options.get("channel", "level2"))


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    return cfg.ws_url


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    return [orjson.dumps(f).decode() for f in parse.subscribe_frames(list(keys), _channel(cfg))]


def resubscribe(cfg: VenueConfig, key: str) -> list[str]:
    """Unsubscribe then subscribe ``key`` on ``level2``: the venue sends its snapshot again; the
    other products of the connection go on."""
    ch = _channel(cfg)
    return [orjson.dumps({"type": t, "product_ids": [key], "channel": ch}).decode()
            for t in ("unsubscribe", "subscribe")]


def pairs_url(cfg: VenueConfig) -> str:
    """The public product list, filtered to the configured products (one ``product_ids`` per
    product, ``product_type=SPOT``)."""
    query = urlencode([("product_type", "SPOT")] + [("product_ids", wire.key_of(s)) for s in cfg.symbols])
    return f"{cfg.rest_url.rstrip('/')}{PRODUCTS_PATH}?{query}"


SPEC = FeedSpec(
    kind="coinbase",
    key_of=wire.key_of,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse.parse_frame,
    pairs_url=pairs_url,
    parse_pairs=wire.parse_advanced_products,
    sequencer=StreamSequencer,
    snapshot=STREAM,
    resync=RESUBSCRIBE,
    resubscribe=resubscribe,
    snapshot_timeout=20.0,  # a multi-MB snapshot on a slow link
    conn_seq=True,
    id_name="sequence_num",
    heartbeat_frame=None,   # the venue's heartbeats channel sends one message a second
    max_conn_age=None,
    resync_on_crossed=True,
    options={"channel": "level2"},
    option_values={"channel": ("level2",)},
)
