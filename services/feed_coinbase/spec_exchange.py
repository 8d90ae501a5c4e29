"""Coinbase Exchange ``level2_batch`` (or ``level2``) as a :class:`~common.feed.spec.FeedSpec`: a
configured alternative to Advanced Trade (``api = "exchange"``).

* One connection, one subscribe ``{"type":"subscribe","product_ids":[..],"channels":[<channel>,
  "heartbeat"]}``. Unauthenticated clients get ``level2_batch`` (the same messages as ``level2``,
  batched every 50 ms); full ``level2`` needs an authenticated connection today (option
  ``channel = "level2"``; this program does not sign).
* Books come in-band (``snapshot`` then ``l2update``s, :class:`~common.feed.sync.StreamSequencer`).
* l2 messages carry **no sequence number**: a lost update is invisible, so books resync on
  reconnect, on a crossed book and on silence (``stale_after``), as Bitstamp's do. One product
  resyncs alone by unsubscribing and subscribing it again (``RESUBSCRIBE``); the per-product
  ``heartbeat`` messages (one a second) keep a quiet connection from looking silent.
* Pair check: ``GET <rest_url>/products`` (``https://api.exchange.coinbase.com``).

Options: ``channel`` (default ``level2_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from common.config import VenueConfig
from common.feed.spec import RESUBSCRIBE, STREAM, FeedSpec
from common.feed.sync import StreamSequencer
from services.feed_coinbase import parse_exchange as parse
from services.feed_coinbase import wire

CHANNELS = ("level2_batch", "level2")


def _channel(cfg: VenueConfig) -> str:
    return str(cfg.options.get("channel", "level2_batch"))


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    return cfg.ws_url


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    return [orjson.dumps(parse.subscribe_frame(list(keys), _channel(cfg))).decode()]


def resubscribe(cfg: VenueConfig, key: str) -> list[str]:
    """Unsubscribe then subscribe ``key`` on the book channel: the venue sends a new snapshot."""
    ch = _channel(cfg)
    return [orjson.dumps({"type": t, "product_ids": [key], "channels": [ch]}).decode()
            for t in ("unsubscribe", "subscribe")]


def pairs_url(cfg: VenueConfig) -> str:
    return f"{cfg.rest_url.rstrip('/')}/products"


SPEC = FeedSpec(
    kind="coinbase",
    key_of=wire.key_of,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse.parse_frame,
    pairs_url=pairs_url,
    parse_pairs=wire.parse_exchange_products,
    sequencer=StreamSequencer,
    snapshot=STREAM,
    resync=RESUBSCRIBE,
    resubscribe=resubscribe,
    snapshot_timeout=20.0,
    conn_seq=False,
    heartbeat_frame=None,  # the heartbeat channel: one message per product per second
    max_conn_age=None,
    resync_on_crossed=True,  # no sequence numbers: a crossed book is the one visible sign of a loss
    options={"channel": "level2_batch"},
    option_values={"channel": CHANNELS},
)
