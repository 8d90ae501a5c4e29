"""The one registry of venue kinds: which program runs a kind's feed, which wire protocols (APIs)
it speaks, and which simulator class plays that exchange.

Config (``kind`` and ``api`` of a ``[venues.<id>]`` table), ``deploy/`` (the program of each feed),
the simulator (its server per kind) and the parametrised tests all read this table instead of
keeping lists of their own. It holds module *names* only and imports them lazily
(:func:`load_spec`, :func:`load_simulator`), so ``common`` still imports no service.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VenueKind:
    """One exchange. ``apis`` maps an API name to the module that defines its ``SPEC``
    (a :class:`common.feed.spec.FeedSpec`); ``default_api`` is the live one today.
    ``simulator`` is ``"module:Class"`` of the simulator's server for this exchange (it serves
    every API of the kind on one port)."""

    kind: str
    feed: str
    apis: dict[str, str]
    default_api: str
    simulator: str
    #: One line for --help and the README.
    about: str = ""


KINDS: dict[str, VenueKind] = {
    "binance": VenueKind(
        "binance", "services.feed_binance", {"spot": "services.feed_binance.spec"}, "spot",
        "services.simulator.binance:BinanceServer",
        "diff depth on a REST snapshot, U/u update ids (also Binance.US)"),
    "bitstamp": VenueKind(
        "bitstamp", "services.feed_bitstamp", {"v2": "services.feed_bitstamp.spec"}, "v2",
        "services.simulator.bitstamp:BitstampServer",
        "diff_order_book on a REST snapshot, microtimestamps"),
    "kraken": VenueKind(
        "kraken", "services.feed_kraken",
        {"v2": "services.feed_kraken.spec_v2", "v1": "services.feed_kraken.spec_v1"}, "v2",
        "services.simulator.kraken:KrakenServer",
        "book channel with an in-band snapshot, CRC32 checksum after every message"),
    "coinbase": VenueKind(
        "coinbase", "services.feed_coinbase",
        {"advanced": "services.feed_coinbase.spec_advanced", "exchange": "services.feed_coinbase.spec_exchange"},
        "advanced", "services.simulator.coinbase:CoinbaseServer",
        "level2 with an in-band snapshot, per-connection sequence_num"),
    "gemini": VenueKind(
        "gemini", "services.feed_gemini",
        {"ws": "services.feed_gemini.spec_ws", "v2": "services.feed_gemini.spec_v2"}, "ws",
        "services.simulator.gemini:GeminiServer",
        "depth stream whose first event is the full book, U/u contiguity (v2: l2 initial book)"),
}


class UnknownVenue(ValueError):
    """A kind or API this registry does not know."""


def kind(name: str) -> VenueKind:
    """The registry entry of ``name``; :class:`UnknownVenue` names the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownVenue(f"kind {name!r} is not one of {sorted(KINDS)}") from None


def api_module(kind_name: str, api: str | None = None) -> str:
    """The module defining ``SPEC`` for ``kind_name``'s ``api`` (its default when None)."""
    k = kind(kind_name)
    api = api or k.default_api
    try:
        return k.apis[api]
    except KeyError:
        raise UnknownVenue(f"kind {kind_name!r} has no api {api!r}; apis: {sorted(k.apis)}") from None


def load_spec(kind_name: str, api: str | None = None) -> Any:
    """Import and return the ``SPEC`` of ``kind_name``/``api`` (a FeedSpec)."""
    return importlib.import_module(api_module(kind_name, api)).SPEC


def load_simulator(kind_name: str) -> Any:
    """Import and return the simulator's server class for ``kind_name``."""
    mod, _, cls = kind(kind_name).simulator.partition(":")
    return getattr(importlib.import_module(mod), cls)
