"""Binance as a :class:`~common.feed.spec.FeedSpec`: one combined-stream connection for all
symbols (streams in the URL, so nothing is sent to subscribe), REST depth snapshots of
``VenueConfig.depth`` levels, exchangeInfo as the pair list. Works for Binance.US unchanged
(only the configured URLs differ)."""

from __future__ import annotations

from collections.abc import Sequence

from common.config import VenueConfig
from common.feed.spec import FeedSpec
from services.feed_binance import parse
from services.feed_binance.sync import BinanceSequencer

#: Binance cuts every connection at 24 h; reconnect on our own terms a little before.
MAX_CONN_AGE = 23.5 * 3600


def ws_url(cfg: VenueConfig, keys: Sequence[str]) -> str:
    speed = str(cfg.options.get("depth_speed", "100ms"))
    streams = "/".join(parse.stream_of(k, speed) for k in keys)
    return f"{cfg.ws_url.rstrip('/')}/stream?streams={streams}"


def snapshot_url(cfg: VenueConfig, key: str) -> str:
    return f"{cfg.rest_url.rstrip('/')}/api/v3/depth?symbol={key}&limit={min(cfg.depth, 5000)}"


def pairs_url(cfg: VenueConfig) -> str:
    return f"{cfg.rest_url.rstrip('/')}/api/v3/exchangeInfo"


def subscribe(cfg: VenueConfig, keys: Sequence[str]) -> list[str]:
    return []  # the streams are in the URL


SPEC = FeedSpec(
    kind="binance",
    key_of=parse.key_of,
    ws_url=ws_url,
    subscribe=subscribe,
    parse_frame=parse.parse_frame,
    snapshot_url=snapshot_url,
    parse_snapshot=parse.parse_snapshot,
    pairs_url=pairs_url,
    parse_pairs=parse.parse_pairs,
    sequencer=BinanceSequencer,
    id_name="lastUpdateId",
    heartbeat_frame=None,  # the server pings every 20 s; the runner answers; we ping too
    max_conn_age=MAX_CONN_AGE,
    resync_on_crossed=True,
    options={"depth_speed": "100ms"},
    option_values={"depth_speed": ("100ms", "")},   # "": the 1000 ms stream
)
