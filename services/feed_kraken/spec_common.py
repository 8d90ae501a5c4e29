"""What Kraken's two APIs share in their specs: the depth rule and the REST pair list URL."""

from __future__ import annotations

from common.config import ConfigError, VenueConfig

#: Book depths Kraken accepts on both APIs.
DEPTHS = (10, 25, 100, 500, 1000)


def validate(cfg: VenueConfig) -> None:
    """Raise :class:`~common.config.ConfigError` (a ValueError) naming ``venues.<id>.depth``
    unless it is a depth Kraken accepts (the venue would refuse the subscription of every symbol
    otherwise). The spec's ``check_config``."""
    if cfg.depth not in DEPTHS:
        raise ConfigError(f"venues.{cfg.id}.depth is {cfg.depth}; Kraken's book depth must be one of "
                         f"{', '.join(map(str, DEPTHS))}")


def depth_limit(cfg: VenueConfig) -> int:
    """Levels per side Kraken keeps us informed of: the subscribed depth (truncate after every
    message; Kraken sends no delete for a level pushed out of it)."""
    return cfg.depth


def pairs_url(cfg: VenueConfig) -> str:
    """REST AssetPairs (every pair with its ``wsname``; unknown symbols are simply absent)."""
    return f"{cfg.rest_url.rstrip('/')}/0/public/AssetPairs"
