"""The venue registry (common/venues.py) is the one list of kinds: every kind's APIs load a spec
of that kind, its feed program answers --help, its simulator class exists, and config, deploy
and the simulator accept exactly those kinds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import venues
from common.config import KNOWN_KINDS, ConfigError
from common.feed.spec import FeedSpec

PAIRS = [(k, a) for k, v in venues.KINDS.items() for a in v.apis]


@pytest.mark.parametrize("kind,api", PAIRS, ids=[f"{k}-{a}" for k, a in PAIRS])
def test_every_api_loads_a_spec_of_its_kind(kind: str, api: str) -> None:
    """Each (kind, api) names a module whose SPEC is a FeedSpec of that kind."""
    spec = venues.load_spec(kind, api)
    assert isinstance(spec, FeedSpec) and spec.kind == kind


@pytest.mark.parametrize("kind", list(venues.KINDS))
def test_every_kind_has_a_feed_program_and_a_simulator(kind: str) -> None:
    """The feed program of each kind answers --help naming its APIs; the simulator plays it."""
    r = subprocess.run([sys.executable, "-m", venues.kind(kind).feed, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    assert all(api in r.stdout for api in venues.kind(kind).apis)
    assert isinstance(venues.load_simulator(kind), type)


def test_config_and_registry_agree() -> None:
    """Config knows exactly the registry's kinds; an unknown kind or api is an error naming it."""
    assert set(KNOWN_KINDS) == set(venues.KINDS)
    with pytest.raises(venues.UnknownVenue, match="'nasdaq'"):
        venues.kind("nasdaq")
    with pytest.raises(venues.UnknownVenue, match="'v3'"):
        venues.api_module("kraken", "v3")
    from pathlib import Path

    from common import config

    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match=r"venues\.kraken\.api"):
        config.load(repo / "deploy" / "demo.toml", sets=['venues.kraken.api="v3"'])
