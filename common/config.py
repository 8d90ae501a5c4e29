"""Configuration: one TOML file (``deploy/bookmux.toml``) loaded once in ``main``, overridable by
flags, frozen, and passed down. A key that is not known is an error, never a silent default.

Flags shared by every service (:func:`add_config_args`)::

    --config PATH          the TOML file (default: deploy/bookmux.toml beside the code)
    --symbols A/B,C/D      the symbols to carry (all venues, unless a venue lists its own)
    --levels N             published depth per side
    --venues a,b           only these venue ids (others are disabled)
    --set KEY=VALUE        any other key, dotted, VALUE in TOML syntax or a bare string:
                           --set venues.binance.ws_url=ws://127.0.0.1:9000
                           --set publisher.port=6000  --set venues.bitstamp.stale_after=3.5
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from common import venues
from common.numbers import BadNumber, parse_decimal

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "deploy" / "bookmux.toml"

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
VENUE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
KNOWN_KINDS = tuple(venues.KINDS)
#: ``startsecs`` of every program in the generated supervisord config (deploy/supervisor.py).
SUPERVISOR_STARTSECS = 1
_T = TypeVar("_T", bound="BaseModel")


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key and what was expected."""


@dataclass(frozen=True)
class DustRule:
    """Levels with amount < ``min_amount`` or price*amount < ``min_notional`` are left out of the
    merged book (never out of the venue book)."""

    min_amount: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)

    def is_dust(self, price: Decimal, amount: Decimal) -> bool:
        return amount < self.min_amount or price * amount < self.min_notional


NO_DUST = DustRule()


@dataclass(frozen=True)
class Shard:
    """One feed process of a venue: its symbols and its own bus endpoints (and CPU)."""

    index: int
    symbols: tuple[str, ...]
    pub: str
    ctl: str
    cpu: int | None = None
    #: ``host:port`` of this process's metrics and health endpoint (None: none).
    metrics: str | None = None


@dataclass(frozen=True)
class VenueConfig:
    id: str
    kind: str
    enabled: bool
    symbols: tuple[str, ...]
    ws_url: str
    rest_url: str
    pub: str
    ctl: str
    stale_after: float
    depth: int
    taker_fee: Decimal
    cpu: int | None
    dust: Mapping[str, DustRule] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    shards: tuple[Shard, ...] = ()
    #: The venue's wire protocol (``common.venues``: e.g. Kraken "v2" or "v1"); "" = the kind's default.
    api: str = ""
    #: ``host:port`` of the feed process's metrics and health endpoint (None: none). With shards,
    #: each ``[[venues.<id>.shards]]`` has its own (``shard(i)`` carries it here).
    metrics: str | None = None
    #: Seconds without a change of a symbol's book on a live connection before it is marked stale
    #: and resynced (None: never); ``quiet_after_symbols`` overrides it per symbol.
    quiet_after: float | None = None
    quiet_after_symbols: Mapping[str, float] = field(default_factory=dict)
    #: Directory to capture every raw frame and REST answer into (None: no capture), rotated at
    #: ``capture_rotate_mb`` MB or ``capture_rotate_s`` seconds, whichever comes first.
    capture: str | None = None
    capture_rotate_mb: float = 64.0
    capture_rotate_s: float = 3600.0

    def quiet_after_for(self, symbol: str) -> float | None:
        """The quiet period of ``symbol``: its own ``quiet_after_symbols`` entry, else ``quiet_after``."""
        return self.quiet_after_symbols.get(symbol, self.quiet_after)

    def dust_rule(self, symbol: str) -> DustRule:
        return self.dust.get(symbol, self.dust.get("*", NO_DUST))

    @property
    def processes(self) -> tuple[Shard, ...]:
        """The feed processes of this venue: its ``[[venues.<id>.shards]]``, or one with the
        venue's own symbols and endpoints. Subscribers see one venue id whatever the split."""
        return self.shards or (Shard(0, self.symbols, self.pub, self.ctl, self.cpu, self.metrics),)

    def shard(self, index: int) -> VenueConfig:
        """This venue as run by feed process ``index`` (its symbols, endpoints and CPU)."""
        procs = self.processes
        if not 0 <= index < len(procs):
            raise ConfigError(f"venues.{self.id} has {len(procs)} feed process(es); --shard {index} is not one")
        sh = procs[index]
        return replace(self, symbols=sh.symbols, pub=sh.pub, ctl=sh.ctl, cpu=sh.cpu, metrics=sh.metrics, shards=())


@dataclass(frozen=True)
class AggregatorShard:
    """One aggregator process of ``[[aggregator.shards]]``: its symbols and its own endpoints."""

    index: int
    symbols: tuple[str, ...]
    pub: str
    ctl: str
    query: str
    #: ``host:port`` of this process's metrics and health endpoint (None: none).
    metrics: str | None = None


@dataclass(frozen=True)
class AggregatorConfig:
    pub: str
    ctl: str
    query: str
    down_after: float
    depletion: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)
    #: ``host:port`` of the metrics and health endpoint (None: none).
    metrics: str | None = None
    #: ``[[aggregator.shards]]``: the symbols split over several aggregator processes (scale-out).
    #: With shards, ``pub``/``ctl``/``query``/``metrics`` above are shard 0's (as a venue's are).
    shards: tuple[AggregatorShard, ...] = ()
    #: The symbols this aggregator merges: every carried symbol, or one shard's (:meth:`shard`).
    symbols: tuple[str, ...] = ()
    #: Which shard this is (:meth:`shard`; None: the whole aggregator configuration).
    index: int | None = None

    @property
    def processes(self) -> tuple[AggregatorShard, ...]:
        """The aggregator processes: the ``[[aggregator.shards]]``, or one with every symbol and
        the ``[aggregator]`` endpoints. Subscribers see one stream of books whatever the split."""
        return self.shards or (AggregatorShard(0, self.symbols, self.pub, self.ctl, self.query, self.metrics),)

    def shard(self, index: int) -> AggregatorConfig:
        """The aggregator as run by process ``index`` (its symbols, endpoints and metrics)."""
        procs = self.processes
        if not 0 <= index < len(procs):
            raise ConfigError(f"aggregator.shards: the config has {len(procs)} aggregator process(es) "
                              f"(--shard 0..{len(procs) - 1}); --shard {index} is not one")
        sh = procs[index]
        return replace(self, pub=sh.pub, ctl=sh.ctl, query=sh.query, metrics=sh.metrics, symbols=sh.symbols,
                       shards=(), index=index if self.shards else None)

    def owner(self, symbol: str) -> AggregatorShard | None:
        """The process that merges ``symbol`` (None: no process carries it)."""
        for sh in self.processes:
            if symbol in sh.symbols:
                return sh
        return None

    def route(self, symbols: Sequence[str]) -> dict[int, list[str]]:
        """Republish requests by process: ``symbols`` grouped by the shard that owns them (symbols
        no shard carries are left out); an empty list (every symbol) goes to every process."""
        if not symbols:
            return {sh.index: [] for sh in self.processes}
        out: dict[int, list[str]] = {}
        for sym in symbols:
            sh = self.owner(sym)
            if sh is not None:
                out.setdefault(sh.index, []).append(sym)
        return out

    def query_endpoint(self, symbol: str) -> str | None:
        """The depletion query endpoint that answers for ``symbol`` (None: no process carries it)."""
        sh = self.owner(symbol)
        return None if sh is None else sh.query

    def query_routes(self) -> dict[str, str]:
        """symbol -> the query endpoint of the process that merges it (for shard-aware clients:
        :func:`common.subscriber.deplete` takes this mapping as its endpoint)."""
        return {sym: sh.query for sh in self.processes for sym in sh.symbols}


@dataclass(frozen=True)
class PublisherConfig:
    bind: str
    port: int
    sndhwm: int
    #: The latest-per-symbol endpoint (ROUTER, see services/publisher/latest.py); None: not served.
    latest_port: int | None = None
    #: ``host:port`` of the metrics and health endpoint (None: none).
    metrics: str | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.bind}:{self.port}"

    @property
    def latest_endpoint(self) -> str | None:
        return None if self.latest_port is None else f"tcp://{self.bind}:{self.latest_port}"


@dataclass(frozen=True)
class SecurityConfig:
    """``curve``: CURVE encryption and authentication on every ZeroMQ endpoint (keys from
    ``make keys`` under ``keys_dir``; see common/security.py)."""

    curve: bool = False
    keys_dir: str = "keys"


@dataclass(frozen=True)
class GatewayGrpcConfig:
    """``[gateway_grpc]``: the original challenge's gRPC stream (services/gateway_grpc), off by
    default. ``symbol`` and ``levels`` are what its ``BookSummary`` serves (default: the first
    configured symbol and the published depth); bookmux's own service serves any carried symbol.
    ``max_clients`` bounds the streams open at once (a further one is refused, never queued)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 50051
    symbol: str = ""
    levels: int = 10
    max_clients: int = 1000
    #: ``host:port`` of the metrics and health endpoint (None: none).
    metrics: str | None = None

    @property
    def address(self) -> str:
        """``host:port`` as gRPC writes it (IPv6 literals in brackets)."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Config:
    symbols: tuple[str, ...]
    levels: int
    log_level: str
    run_dir: str
    max_msg_size: int
    venues: Mapping[str, VenueConfig]
    aggregator: AggregatorConfig
    publisher: PublisherConfig
    simulator: Mapping[str, Any] = field(default_factory=dict)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    gateway_grpc: GatewayGrpcConfig = field(default_factory=GatewayGrpcConfig)
    source: str = ""

    @property
    def enabled_venues(self) -> list[VenueConfig]:
        """The venues to run: enabled, and carrying at least one of the configured symbols."""
        return [v for v in self.venues.values() if v.enabled and v.symbols]

    def venue(self, venue_id: str) -> VenueConfig:
        try:
            return self.venues[venue_id]
        except KeyError:
            raise ConfigError(f"unknown venue {venue_id!r}; configured: {sorted(self.venues)}") from None

    @property
    def all_symbols(self) -> list[str]:
        """Every symbol any enabled venue carries, in first-seen order."""
        seen: dict[str, None] = dict.fromkeys(self.symbols)
        for v in self.enabled_venues:
            seen.update(dict.fromkeys(v.symbols))
        return list(seen)

    def for_aggregator(self, index: int | None) -> Config:
        """The config as aggregator process ``index`` sees it: that shard's endpoints, and only its
        symbols (top-level and per venue; feed processes with none of them left out). ``None``
        without ``[[aggregator.shards]]``: the config itself. Raises ConfigError naming the key for
        a missing or out-of-range index."""
        agg = self.aggregator
        if index is None:
            if agg.shards:
                raise ConfigError(f"aggregator.shards: the config splits the aggregator in {len(agg.shards)} "
                                  f"processes; run each with --shard 0..{len(agg.shards) - 1}")
            return self
        mine = agg.shard(index)
        if not agg.shards:
            return replace(self, aggregator=mine)
        keep = set(mine.symbols)
        venues_ = {}
        for vid, v in self.venues.items():
            shards = tuple(replace(sh, symbols=tuple(s for s in sh.symbols if s in keep)) for sh in v.shards)
            venues_[vid] = replace(v, symbols=tuple(s for s in v.symbols if s in keep),
                                   shards=tuple(sh for sh in shards if sh.symbols))
        return replace(self, aggregator=mine, venues=venues_, symbols=tuple(s for s in self.symbols if s in keep))


# --- the schema ---------------------------------------------------------------------------------
#
# Every key of the TOML file is declared once below, with its type and range, as pydantic models
# (strict: no string is taken for a number, no number for a string; unknown keys are errors;
# no NaN or infinity). ``build`` validates the whole file against them, then checks what spans
# several keys (shards, ports, endpoints, the venue's own options) and freezes the result into the
# dataclasses above. A wrong value is a ConfigError whose message starts with the dotted key.


class WrongValues:
    """Annotation metadata: values of a type that must be refused (besides the wrong types and the
    bounds pydantic already knows). The test that gives every key a wrong value reads it."""

    def __init__(self, *values: Any) -> None:
        self.values = values


class _KeyedError(ValueError):
    """A cross-field rule broken inside a table: ``key`` is the field to name (not the table)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _Table(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


def _symbol(v: str) -> str:
    s = v.strip().upper()
    if not SYMBOL_RE.match(s):
        raise ValueError(f"{v!r} is not a symbol of the form BASE/QUOTE (e.g. BTC/USDT)")
    return s


def _symbol_list(v: Any) -> Any:
    """``"BTC/USDT,ETH/USDT"`` is a list too (flags and the top-level ``symbols``)."""
    return [x for x in v.split(",") if x.strip()] if isinstance(v, str) else v


def _unique(v: list[str]) -> list[str]:
    return list(dict.fromkeys(v))


def _decimal_in(v: Any) -> Any:
    if isinstance(v, float):
        raise ValueError(f"write decimals as strings (\"0.001\"), not floats ({v!r})")
    if isinstance(v, str | int) and not isinstance(v, bool):
        try:
            return parse_decimal(str(v) if isinstance(v, int) else v)
        except BadNumber as e:
            raise ValueError(str(e)) from None
    return v


def _tcp_port(v: int) -> int:
    if not 0 < v < 65536:
        raise ValueError(f"{v} is not a TCP port (1..65535)")
    return v


def _host_port(v: str) -> str:
    """``host:port`` (IPv6 in brackets); port 0 = any free port."""
    host, colon, port = v.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{v!r} is not \"host:port\" such as \"127.0.0.1:50100\"")
    return v


def _endpoint(v: str) -> str:
    """A ZeroMQ endpoint: ``tcp://host:port`` (port 1..65535 or ``*``), ``ipc://path``, ``inproc://name``."""
    scheme, sep, rest = v.partition("://")
    if sep and scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if colon and host.strip("[]") and (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
            return v
    elif sep and scheme in ("ipc", "inproc") and rest:
        return v
    raise ValueError(f"{v!r} is not a ZeroMQ endpoint: tcp://host:port, ipc://path or inproc://name")


def _url(*schemes: str) -> Any:
    def check(v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in schemes or not rest.strip("/"):
            raise ValueError(f"{v!r} is not a {' or '.join(s + '://' for s in schemes)} URL")
        return v
    return check


def _empty_is_none(v: Any) -> Any:
    return None if isinstance(v, str) and not v.strip() else v


def _upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v


Symbol = Annotated[str, AfterValidator(_symbol), WrongValues("BTCUSDT", "BTC/")]
Symbols = Annotated[list[Symbol], BeforeValidator(_symbol_list), AfterValidator(_unique), WrongValues([5])]
DustKey = Annotated[str, AfterValidator(lambda v: v if v == "*" else _symbol(v)), WrongValues("BTCUSD")]
VenueId = Annotated[str, Field(pattern=VENUE_RE.pattern), WrongValues("Bad-Id", "9lives")]
Seconds = Annotated[float, Field(gt=0)]
NonNegDecimal = Annotated[Decimal, BeforeValidator(_decimal_in), WrongValues(0.5, "1e", "-1")]
PosDecimal = Annotated[Decimal, BeforeValidator(_decimal_in), Field(gt=0), WrongValues(0.5, "1e", "0")]
TcpPort = Annotated[int, AfterValidator(_tcp_port), WrongValues(0, 70000)]
AnyPort = Annotated[int, Field(ge=0, le=65535)]          # 0: any free port (tests)
Host = Annotated[str, Field(min_length=1)]
Endpoint = Annotated[str, AfterValidator(_endpoint), WrongValues("127.0.0.1:5000", "tcp://host", "tcp://h:0",
                                                                 "udp://h:1", "ipc://")]
Metrics = Annotated[str | None, BeforeValidator(_empty_is_none), AfterValidator(
    lambda v: None if v is None else _host_port(v)), WrongValues("50100", "127.0.0.1", "h:70000")]
Cpu = Annotated[int, Field(ge=0)]
WsUrl = Annotated[str, AfterValidator(_url("ws", "wss")), WrongValues("http://h", "h:1")]
HttpUrl = Annotated[str, AfterValidator(_url("http", "https")), WrongValues("ws://h", "h:1")]
Path_ = Annotated[str, Field(min_length=1)]
OptPath = Annotated[str | None, BeforeValidator(_empty_is_none)]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)]


def _kind(v: str) -> str:
    if v not in KNOWN_KINDS:
        raise ValueError(f"{v!r} is not one of {list(KNOWN_KINDS)}")
    return v


Kind = Annotated[str, AfterValidator(_kind), WrongValues("ftx")]


class DustTable(_Table):
    """``[venues.<id>.dust] "BTC/USDT" = { min_amount = "..", min_notional = ".." }`` ("*": every symbol)."""

    min_amount: NonNegDecimal = Decimal(0)
    min_notional: NonNegDecimal = Decimal(0)


class ShardTable(_Table):
    """``[[venues.<id>.shards]]``: one feed process of the venue."""

    symbols: Annotated[Symbols, Field(min_length=1)]
    pub: Endpoint
    ctl: Endpoint
    cpu: Cpu | None = None
    metrics: Metrics = None


class RunnerOptions(_Table):
    """``[venues.<id>.options]`` every venue takes (the feed runner's; common/feed/runner.py
    ``RUNNER_OPTIONS`` holds the same defaults). A venue API adds its own (``FeedSpec.options``)."""

    ping_every: Seconds | None = None                 # None: stale_after / 3
    open_timeout: Seconds = 10.0
    rest_timeout: Seconds = 10.0
    backoff_initial: Seconds = 0.5
    backoff_cap: Seconds = 30.0
    backoff_jitter: Annotated[float, Field(ge=0, le=1)] = 0.5
    snapshot_retry_cap: Annotated[float, Field(ge=0.25)] = 5.0   # its backoff starts at 0.25 s
    rest_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    heartbeat_every: Seconds | None = None            # None: the spec's
    max_conn_age: Annotated[float, Field(ge=1)] | None = None    # None: the spec's
    pair_check: bool = True
    precision: Annotated[list[Annotated[int, Field(ge=0, le=18)]], Field(min_length=2, max_length=2)] | None = None
    quiet_resyncs_per_min: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 4.0   # quiet_after's budget

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> RunnerOptions:
        if self.backoff_cap < self.backoff_initial:
            raise _KeyedError("backoff_cap", f"{self.backoff_cap} is below backoff_initial {self.backoff_initial}")
        return self


class VenueTable(_Table):
    """``[venues.<id>]``: one venue deployment (its feed process or processes)."""

    kind: Kind | None = None                          # default: the venue id
    api: Annotated[str, WrongValues("nope")] | None = None      # default: the kind's
    enabled: bool = True
    symbols: Symbols | None = None
    ws_url: WsUrl
    rest_url: HttpUrl
    pub: Endpoint | None = None                       # required without shards
    ctl: Endpoint | None = None
    stale_after: Seconds = 10.0
    depth: Annotated[int, Field(ge=1)] = 1000
    taker_fee: Annotated[NonNegDecimal, Field(lt=1)] = Decimal(0)
    cpu: Cpu | None = None
    dust: dict[DustKey, DustTable] = {}
    options: dict[str, Any] = {}                      # validated per venue API (_options_model)
    shards: Annotated[list[ShardTable], Field(min_length=1)] | None = None
    metrics: Metrics = None
    quiet_after: Seconds | None = None
    quiet_after_symbols: dict[Symbol, Seconds] = {}
    capture: OptPath = None
    capture_rotate_mb: Seconds = 64.0
    capture_rotate_s: Seconds = 3600.0

    @model_validator(mode="after")
    def _endpoints(self) -> VenueTable:
        if not self.shards:
            for key in ("pub", "ctl"):
                if getattr(self, key) is None:
                    raise _KeyedError(key, "is required (or [[...shards]] with their own)")
        return self


class AggregatorShardTable(_Table):
    """``[[aggregator.shards]]``: one aggregator process, merging ``symbols`` only."""

    symbols: Annotated[Symbols, Field(min_length=1)]
    pub: Endpoint
    ctl: Endpoint
    query: Endpoint
    metrics: Metrics = None


class AggregatorTable(_Table):
    pub: Endpoint = "tcp://127.0.0.1:50054"
    ctl: Endpoint = "tcp://127.0.0.1:50055"
    query: Endpoint = "tcp://127.0.0.1:50053"
    down_after: Seconds = 3.0
    depletion: dict[Symbol, Annotated[list[PosDecimal], Field(min_length=1)]] = {}
    metrics: Metrics = None
    shards: Annotated[list[AggregatorShardTable], Field(min_length=1)] | None = None


class PublisherTable(_Table):
    bind: Host = "127.0.0.1"
    port: TcpPort = 50052
    sndhwm: Annotated[int, Field(ge=1)] = 1000        # 0 would be ZeroMQ's "no limit": unbounded memory
    latest_port: TcpPort | None = None                # the latest-per-symbol endpoint
    metrics: Metrics = None

    @model_validator(mode="after")
    def _own_latest_port(self) -> PublisherTable:
        if self.latest_port == self.port:
            raise _KeyedError("latest_port", f"{self.latest_port} is not a TCP port other than publisher.port")
        return self


class SecurityTable(_Table):
    curve: bool = False
    keys_dir: Path_ = "keys"


class GatewayGrpcTable(_Table):
    enabled: bool = False
    bind: Host = "127.0.0.1"
    port: TcpPort = 50051
    symbol: Annotated[str, AfterValidator(lambda v: _symbol(v) if v else v), WrongValues("BTCUSDT")] = ""
    levels: Annotated[int, Field(ge=1, le=1000)] | None = None   # default: the published depth
    max_clients: Annotated[int, Field(ge=1)] = 1000
    metrics: Metrics = None


class SimulatorVenueTable(_Table):
    """``[simulator.venues.<id>]``: one simulated exchange."""

    kind: Kind | None = None                          # default: the id
    port: AnyPort = 0
    symbols: Symbols | None = None                    # default: the top-level symbols
    replay: OptPath = None
    levels: dict[Symbol, Annotated[int, Field(ge=1)]] = {}


class SimulatorTable(_Table):
    """``[simulator]``: the exchange simulator (services/simulator) of ``make demo``."""

    host: Host = "127.0.0.1"
    control_port: AnyPort = 50090
    seed: int = 7
    rate: Annotated[float, Field(ge=0)] = 10.0
    burst_probability: Annotated[float, Field(ge=0, le=1)] = 0.01
    ping_interval: Seconds = 20.0
    pong_timeout: Seconds = 60.0
    history_seconds: Seconds = 30.0
    min_levels: Annotated[int, Field(ge=1)] = 250
    max_levels: Annotated[int, Field(ge=1)] = 500
    replay_speed: Annotated[float, Field(ge=0)] = 1.0  # 0: as fast as possible
    replay_gate_timeout: Seconds = 10.0
    venues: Annotated[dict[VenueId, SimulatorVenueTable], Field(min_length=1)]

    @model_validator(mode="after")
    def _levels(self) -> SimulatorTable:
        if self.max_levels < self.min_levels:
            raise _KeyedError("max_levels", f"{self.max_levels} is below min_levels {self.min_levels}")
        for vid, v in self.venues.items():
            bad = sorted(set(v.levels) - set(v.symbols or set(v.levels)))
            if bad:
                raise _KeyedError(f"venues.{vid}.levels", f"{bad} not among the venue's symbols {v.symbols}")
        return self


class ConfigFile(_Table):
    """The whole TOML file."""

    symbols: Symbols = []
    levels: Annotated[int, Field(ge=1, le=1000)] = 10
    log_level: LogLevel = "INFO"
    run_dir: Path_ = "run"
    max_msg_size: Annotated[int, Field(ge=64 * 1024)] = 64 * 1024 * 1024   # smaller drops every snapshot
    venues: dict[VenueId, VenueTable] = {}
    aggregator: AggregatorTable = AggregatorTable()
    publisher: PublisherTable = PublisherTable()
    simulator: SimulatorTable | None = None
    security: SecurityTable = SecurityTable()
    gateway_grpc: GatewayGrpcTable = GatewayGrpcTable()
    #: ``[cluster.hosts.<name>]``: hosts and their programs, validated by deploy/supervisor.py
    #: (--cluster) only; the services ignore it.
    cluster: dict[str, Any] = {}


_BOUND_WORDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
                "less_than_equal": ("<=", "le")}
_TYPE_WORDS = {"float_type": "float", "int_type": "int", "string_type": "str", "bool_type": "bool",
               "dict_type": "a table", "model_type": "a table", "list_type": "a list", "decimal_type": "a decimal"}


def _key(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out += f".{part}" if out else str(part)
    return out or "config"


def _message(err: Mapping[str, Any], prefix: Sequence[Any]) -> str:
    """One pydantic error as ``<dotted key> <what is wrong>`` (the key first, always)."""
    loc = [*prefix, *err["loc"]]
    kind, got = err["type"], err.get("input")
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, _KeyedError):
        return f"{_key([*loc, *error.key.split('.')])}: {error}"
    if kind == "extra_forbidden":
        return f"{_key(loc[:-1])}: unknown key(s) [{loc[-1]!r}]"
    if kind == "missing":
        return f"{_key(loc)} is required"
    if loc and loc[-1] == "[key]":
        return f"{_key(loc)}: key {got!r}: {err['msg'].removeprefix('Value error, ')}"
    if kind in _TYPE_WORDS:
        return f"{_key(loc)} must be {_TYPE_WORDS[kind]}, got {got!r}"
    if kind in _BOUND_WORDS:
        ctx = err.get("ctx") or {}
        op, name = _BOUND_WORDS[kind]
        bound = ctx.get(name)
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"{_key(loc)} must be {op} {bound}, got {got!r}"
    if kind == "literal_error":
        return f"{_key(loc)} must be {(err.get('ctx') or {}).get('expected')}, got {got!r}"
    if kind == "value_error":                     # our validators' messages show the value themselves
        return f"{_key(loc)}: {err['msg'].removeprefix('Value error, ')}"
    return f"{_key(loc)}: {err['msg']}, got {got!r}"


def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X, ``X | None`` -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _table_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model of the table at ``loc`` inside ``model`` (None: not a table)."""
    ann: Any = model
    for part in loc:
        ann = _strip(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            fld = ann.model_fields.get(str(part))
            if fld is None:
                return None
            ann = fld.annotation
        elif get_origin(ann) in (dict, list):
            ann = get_args(ann)[-1]
        else:
            return None
    ann = _strip(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _validate(model: type[_T], data: Any, prefix: Sequence[Any] = ()) -> _T:
    """``model`` validated from ``data``, or a ConfigError naming the key of the first error (and
    how many more there are). Unknown keys are reported per table with the keys it allows."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        first = errs[0]
        if first["type"] == "extra_forbidden":
            parent = first["loc"][:-1]
            extra = [str(x["loc"][-1]) for x in errs if x["type"] == "extra_forbidden" and x["loc"][:-1] == parent]
            table = _table_at(model, parent)
            allowed = sorted(table.model_fields) if table is not None else []
            msg = f"{_key([*prefix, *parent])}: unknown key(s) {sorted(extra)}; allowed: {allowed}"
            rest = len(errs) - len(extra)
        else:
            msg, rest = _message(first, prefix), len(errs) - 1
        raise ConfigError(msg + (f" (and {rest} more error(s))" if rest else "")) from None


_OPTION_MODELS: dict[tuple[str, str], type[RunnerOptions]] = {}


def _options_model(kind: str, api: str) -> type[RunnerOptions]:
    """The ``[venues.<id>.options]`` of a ``kind``/``api`` venue: the runner's options plus the
    API's own (``FeedSpec.options``: typed by their default, limited to ``FeedSpec.option_values``
    when it lists them). The spec is imported here, lazily, through the venue registry."""
    if (kind, api) not in _OPTION_MODELS:
        spec = venues.load_spec(kind, api)
        choices: Mapping[str, tuple[Any, ...]] = getattr(spec, "option_values", {}) or {}
        fields: dict[str, Any] = {}
        for name, default in spec.options.items():
            if name in choices:
                ann: Any = Literal[tuple(choices[name])]
            elif isinstance(default, bool) or default is None:
                ann = bool if isinstance(default, bool) else Any
            elif isinstance(default, int | float):
                ann = Annotated[float, Field(ge=0)] if isinstance(default, float) else Annotated[int, Field(ge=0)]
            else:
                ann = type(default)
            fields[name] = (ann, default)
        _OPTION_MODELS[(kind, api)] = create_model(f"Options_{kind}_{api}", __base__=RunnerOptions, **fields)
    return _OPTION_MODELS[(kind, api)]


def options_model(kind: str, api: str | None = None) -> type[RunnerOptions]:
    """The options schema of a ``kind`` venue speaking ``api`` (its default when None)."""
    return _options_model(kind, api or venues.KINDS[kind].default_api)


# --- building the frozen config ---------------------------------------------------------------


def _venue(vid: str, t: VenueTable, symbols: tuple[str, ...]) -> VenueConfig:
    where = f"venues.{vid}"
    kind = t.kind or vid
    if kind not in KNOWN_KINDS:
        raise ConfigError(f"{where}.kind {kind!r} is not one of {list(KNOWN_KINDS)}")
    apis = venues.KINDS[kind].apis
    api = t.api if t.api is not None else venues.KINDS[kind].default_api
    if api not in apis:
        raise ConfigError(f"{where}.api {api!r}: a {kind} venue speaks {sorted(apis)}")
    opts = _validate(_options_model(kind, api), t.options, ("venues", vid, "options"))
    options = {k: getattr(opts, k) for k in t.options}
    # A venue's own list names what it lists; it carries those of the top-level symbols (so
    # --symbols narrows every venue, and no venue is asked for a pair it does not have).
    venue_symbols = symbols
    if t.symbols:
        own = tuple(t.symbols)
        venue_symbols = own if t.shards else tuple(s for s in symbols if s in own)
    shards = _shards(t.shards, where)
    if shards:
        venue_symbols = tuple(s for sh in shards for s in sh.symbols)
        if t.metrics:
            raise ConfigError(f"{where}.metrics: a venue split in shards has one metrics endpoint per process; "
                              f"set metrics in each [[{where}.shards]] instead")
    assert shards or (t.pub is not None and t.ctl is not None)      # VenueTable checked it
    cfg = VenueConfig(
        id=vid, kind=kind, api=api, enabled=t.enabled, symbols=venue_symbols, shards=shards,
        ws_url=t.ws_url, rest_url=t.rest_url,
        pub=shards[0].pub if shards else str(t.pub), ctl=shards[0].ctl if shards else str(t.ctl),
        stale_after=t.stale_after, depth=t.depth, taker_fee=t.taker_fee, cpu=t.cpu,
        dust={sym: DustRule(r.min_amount, r.min_notional) for sym, r in t.dust.items()},
        options=options, metrics=t.metrics, quiet_after=t.quiet_after,
        quiet_after_symbols=dict(t.quiet_after_symbols), capture=t.capture,
        capture_rotate_mb=t.capture_rotate_mb, capture_rotate_s=t.capture_rotate_s,
    )
    spec = venues.load_spec(kind, api)
    if spec.check_config is not None:
        spec.check_config(cfg)        # the venue's own rules (e.g. Kraken's depths), naming the key
    return cfg


def _shards(raw: list[ShardTable] | None, where: str) -> tuple[Shard, ...]:
    """``[[venues.<id>.shards]]``: the venue's symbols split over several feed processes, each with
    ``symbols``, ``pub``, ``ctl`` and optional ``cpu`` and ``metrics``. A symbol may be in one shard only."""
    if not raw:
        return ()
    out: list[Shard] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw):
        for sym in t.symbols:
            if sym in seen:
                raise ConfigError(f"{where}.shards[{i}]: {sym} is already in shard {seen[sym]}")
            seen[sym] = i
        out.append(Shard(i, tuple(t.symbols), t.pub, t.ctl, t.cpu, t.metrics))
    ends = [e for sh in out for e in (sh.pub, sh.ctl)]
    if len(set(ends)) != len(ends):
        raise ConfigError(f"{where}.shards: every shard needs its own pub and ctl endpoints")
    return tuple(out)


def _aggregator(t: AggregatorTable, carried: list[str]) -> AggregatorConfig:
    """``[aggregator]`` and its ``[[aggregator.shards]]``: a symbol in one shard only, every carried
    symbol in one, no shard symbol that nothing carries, every shard its own endpoints."""
    depletion = {s: tuple(sizes) for s, sizes in t.depletion.items()}
    if not t.shards:
        return AggregatorConfig(pub=t.pub, ctl=t.ctl, query=t.query, down_after=t.down_after,
                                depletion=depletion, metrics=t.metrics, symbols=tuple(carried))
    seen: dict[str, int] = {}
    out: list[AggregatorShard] = []
    for i, sh in enumerate(t.shards):
        for sym in sh.symbols:
            if sym in seen:
                raise ConfigError(f"aggregator.shards[{i}].symbols: {sym} is already in shard {seen[sym]}")
            if sym not in carried:
                raise ConfigError(f"aggregator.shards[{i}].symbols: {sym} is not a configured symbol (top-level "
                                  f"symbols or an enabled venue's); configured: {carried}")
            seen[sym] = i
        out.append(AggregatorShard(i, tuple(sh.symbols), sh.pub, sh.ctl, sh.query, sh.metrics))
    missing = [s for s in carried if s not in seen]
    if missing:
        raise ConfigError(f"aggregator.shards: no shard merges {missing}; every carried symbol must be in the "
                          "symbols of one [[aggregator.shards]]")
    unused = sorted(k for k in ("pub", "ctl", "query", "metrics") if k in t.model_fields_set)
    if unused:
        logging.getLogger("config").warning(
            "aggregator.%s: not used with [[aggregator.shards]] (each shard has its own)", "/".join(unused))
    s0 = out[0]
    return AggregatorConfig(pub=s0.pub, ctl=s0.ctl, query=s0.query, down_after=t.down_after, depletion=depletion,
                            metrics=s0.metrics, shards=tuple(out), symbols=tuple(carried))


def _aggregator_keys(agg: AggregatorConfig, what: str) -> list[tuple[str, str | None]]:
    """(key, value) of ``what`` (pub, ctl, query, metrics) of every aggregator process."""
    if not agg.shards:
        return [(f"aggregator.{what}", getattr(agg, what))]
    return [(f"aggregator.shards[{sh.index}].{what}", getattr(sh, what)) for sh in agg.shards]


def _gateway_grpc(t: GatewayGrpcTable, *, carried: list[str], levels: int,
                  publisher: PublisherConfig) -> GatewayGrpcConfig:
    """``[gateway_grpc]`` beyond its own keys: its port against the publisher's, its symbol."""
    where = "gateway_grpc"
    if t.port == publisher.port and (t.bind == publisher.bind or "0.0.0.0" in (t.bind, publisher.bind)):
        raise ConfigError(f"{where}.port {t.port} is publisher.port: give the gRPC gateway its own port (50051)")
    symbol = t.symbol
    if symbol:
        if symbol not in carried and t.enabled:
            raise ConfigError(f"{where}.symbol {symbol} is not a configured symbol; configured: {carried}")
    else:
        symbol = carried[0]
    if t.bind not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("config").warning(
            "gateway_grpc.bind %s is not loopback: the gRPC gateway has no TLS, anyone who reaches it can read", t.bind)
    return GatewayGrpcConfig(enabled=t.enabled, bind=t.bind, port=t.port, symbol=symbol,
                             levels=t.levels if t.levels is not None else levels, max_clients=t.max_clients,
                             metrics=t.metrics)


def _distinct_metrics(venue_cfgs: Mapping[str, VenueConfig], aggregator: AggregatorConfig, publisher: str | None,
                      gateway: str | None) -> None:
    """Two processes cannot serve metrics on one address (port 0 = any free port: never a clash)."""
    seen: dict[str, str] = {}
    named = [*_aggregator_keys(aggregator, "metrics"), ("publisher.metrics", publisher),
             ("gateway_grpc.metrics", gateway)]
    for v in venue_cfgs.values():
        if v.shards:
            named += [(f"venues.{v.id}.shards[{sh.index}].metrics", sh.metrics) for sh in v.shards]
        else:
            named.append((f"venues.{v.id}.metrics", v.metrics))
    for key, addr in named:
        if addr is None or addr.endswith(":0"):
            continue
        if addr in seen:
            raise ConfigError(f"{key} {addr} is also {seen[addr]}: every process needs its own metrics address")
        seen[addr] = key


def _distinct_endpoints(venue_cfgs: Mapping[str, VenueConfig], agg: AggregatorConfig) -> None:
    """Each bound ZeroMQ endpoint belongs to one socket: the aggregator's three and every enabled
    feed process's pub and ctl (a second bind would fail at start, and again at every restart)."""
    seen: dict[str, str] = {}
    named = [kv for what in ("pub", "ctl", "query") for kv in _aggregator_keys(agg, what)]
    for v in venue_cfgs.values():
        if v.enabled:
            for sh in v.processes:
                w = f"venues.{v.id}" + (f".shards[{sh.index}]" if v.shards else "")
                named += [(f"{w}.pub", sh.pub), (f"{w}.ctl", sh.ctl)]
    for key, ep in named:
        if ep is None or ep.endswith(":*"):
            continue
        if ep in seen:
            raise ConfigError(f"{key} {ep} is also {seen[ep]}: every socket needs its own endpoint")
        seen[ep] = key


def is_loopback(host: str) -> bool:
    """``host`` (an address as bound, IPv6 with or without brackets) is on this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False      # a wildcard ("*", "0.0.0.0" is parsed above) or an interface name


def _loopback_only(publisher: PublisherConfig, aggregator: AggregatorConfig,
                   venue_cfgs: Mapping[str, VenueConfig]) -> None:
    """Without CURVE every ZeroMQ endpoint a service binds must be loopback (or ipc/inproc): on
    any other address anyone who reaches it could read the books or inject into the bus."""
    ends = {k: str(ep) for what in ("pub", "ctl", "query") for k, ep in _aggregator_keys(aggregator, what)}
    for v in venue_cfgs.values():
        if v.enabled:
            for sh in v.processes:
                w = f"venues.{v.id}" if not v.shards else f"venues.{v.id}.shards[{sh.index}]"
                ends[f"{w}.pub"], ends[f"{w}.ctl"] = sh.pub, sh.ctl
    hosts = {"publisher.bind": publisher.bind}
    for key, ep in ends.items():
        scheme, _, rest = ep.partition("://")
        if scheme == "tcp":
            hosts[key] = rest.rpartition(":")[0]
    for key, host in hosts.items():
        if not is_loopback(host):
            raise ConfigError(f"{key}: {host!r} is not a loopback address and security.curve is off: anyone who "
                              "reaches it could read or inject; set [security] curve = true (make keys) "
                              "or bind 127.0.0.1")


def validate_simulator(raw: Mapping[str, Any]) -> SimulatorTable:
    """The ``[simulator]`` table validated (services/simulator turns it into its Settings)."""
    return _validate(SimulatorTable, dict(raw), ("simulator",))


def build(raw: Mapping[str, Any], source: str = "") -> Config:
    """Validate a raw mapping (as read from TOML) into a frozen :class:`Config`: every key of every
    table, whichever service asks (a feed refuses a wrong ``publisher.sndhwm`` too)."""
    f = _validate(ConfigFile, dict(raw))
    symbols = tuple(f.symbols)
    venue_cfgs = {vid: _venue(vid, t, symbols) for vid, t in f.venues.items()}
    if not any(v.enabled for v in venue_cfgs.values()):
        raise ConfigError("no venue is enabled")
    if not {s for v in venue_cfgs.values() if v.enabled for s in v.symbols}:
        raise ConfigError("no symbols configured (symbols = [\"BTC/USDT\"] or --symbols BTC/USDT)")
    a, p = f.aggregator, f.publisher
    carried = list(dict.fromkeys([*symbols, *(s for v in venue_cfgs.values() if v.enabled for s in v.symbols)]))
    aggregator = _aggregator(a, carried)
    publisher = PublisherConfig(bind=p.bind, port=p.port, sndhwm=p.sndhwm, latest_port=p.latest_port,
                                metrics=p.metrics)
    security = SecurityConfig(curve=f.security.curve, keys_dir=f.security.keys_dir)
    gateway_grpc = _gateway_grpc(f.gateway_grpc, carried=carried, levels=f.levels, publisher=publisher)
    if f.simulator is not None:
        for vid, sv in f.simulator.venues.items():
            if sv.kind is None and vid not in KNOWN_KINDS:
                raise ConfigError(f"simulator.venues.{vid}.kind: the id {vid!r} is not a kind; "
                                  f"give kind = one of {list(KNOWN_KINDS)}")
            bad = sorted(set(sv.levels) - set(sv.symbols or symbols))
            if bad:
                raise ConfigError(f"simulator.venues.{vid}.levels: {bad} not among the venue's symbols "
                                  f"{list(sv.symbols or symbols)}")
    _distinct_metrics(venue_cfgs, aggregator, publisher.metrics, gateway_grpc.metrics)
    _distinct_endpoints(venue_cfgs, aggregator)
    if not security.curve:
        _loopback_only(publisher, aggregator, venue_cfgs)
    return Config(
        symbols=symbols, levels=f.levels, log_level=f.log_level, security=security, gateway_grpc=gateway_grpc,
        run_dir=f.run_dir, max_msg_size=f.max_msg_size, venues=venue_cfgs, aggregator=aggregator,
        publisher=publisher, simulator=copy.deepcopy(dict(raw.get("simulator", {}))), source=source,
    )


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = [x[1:-1] if len(x) > 1 and x[0] == x[-1] == '"' else x for x in dotted.split(".")]
    if not all(parts):
        raise ConfigError(f"--set {dotted!r}: empty key part")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted!r}: {p!r} is not a table")
        cur = nxt
    cur[parts[-1]] = value


def _venue_tables(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    v = raw.get("venues", {})
    return v if isinstance(v, dict) else {}


def load(path: str | Path | None = None, *, symbols: str | Sequence[str] | None = None,
         levels: int | None = None, venues: str | Sequence[str] | None = None,
         sets: Sequence[str] = ()) -> Config:
    """Read the TOML file, apply overrides, validate. Raises :class:`ConfigError`."""
    p = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from None
    raw = copy.deepcopy(raw)
    for item in sets:
        key, eq, val = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        _set_path(raw, key.strip(), _parse_value(val.strip()))
    if symbols:
        try:
            raw["symbols"] = [_symbol(x) for x in _symbol_list(symbols if isinstance(symbols, str) else list(symbols))]
        except ValueError as e:
            raise ConfigError(f"--symbols: {e}") from None
        for vid, v in _venue_tables(raw).items():
            if isinstance(v, dict) and v.get("shards") and v.get("enabled", True):
                raise ConfigError(f"--symbols cannot re-split venues.{vid}.shards: list the symbols "
                                  "in the shards of the config instead")
        agg = raw.get("aggregator")
        if isinstance(agg, dict) and agg.get("shards"):
            raise ConfigError("--symbols cannot re-split aggregator.shards: list the symbols in the "
                              "[[aggregator.shards]] of the config instead")
    if levels is not None:
        raw["levels"] = levels
    if venues:
        wanted = [x.strip() for x in (venues.split(",") if isinstance(venues, str) else venues) if x.strip()]
        unknown = sorted(set(wanted) - set(_venue_tables(raw)))
        if unknown:
            raise ConfigError(f"--venues: unknown venue(s) {unknown}; configured: {sorted(_venue_tables(raw))}")
        for vid, v in _venue_tables(raw).items():
            if isinstance(v, dict):
                v["enabled"] = vid in wanted
    return build(raw, source=str(p))


def add_config_args(ap: argparse.ArgumentParser) -> None:
    """Add the flags every service shares (see the module docstring)."""
    g = ap.add_argument_group("configuration")
    g.add_argument("--config", default=str(DEFAULT_CONFIG), help="TOML config file (default: %(default)s)")
    g.add_argument("--symbols", default=None, help="comma-separated symbols, e.g. BTC/USDT,ETH/USDT")
    g.add_argument("--levels", type=int, default=None, help="published depth per side (config: levels)")
    g.add_argument("--venues", default=None, help="comma-separated venue ids to enable (others off)")
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set venues.binance.ws_url=ws://127.0.0.1:9000")
    g.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (config: log_level)")


def from_args(args: argparse.Namespace) -> Config:
    """Load the config named by :func:`add_config_args` flags (what every service ``main`` does
    first). Raises :class:`ConfigError`; the caller prints it as its last line and exits 2.

    Under supervisord, a ConfigError is raised only once the process has run for the programs'
    ``startsecs``: supervisord ignores ``exitcodes`` for a program that exits sooner (it counts a
    failed start and retries, ``startretries`` times), so an early exit 2 would be restarted in a
    loop; after ``startsecs`` it is an expected exit and stays down until the config is fixed."""
    sets = list(args.sets)
    if getattr(args, "log_level", None):
        sets.append(f"log_level={args.log_level!r}")
    try:
        return load(args.config, symbols=args.symbols or None, levels=args.levels,
                    venues=args.venues or None, sets=sets)
    except ConfigError:
        hold_for_supervisor()
        raise


def hold_for_supervisor() -> None:
    """Under supervisord (``SUPERVISOR_ENABLED`` in the environment), sleep until the process has
    run ``SUPERVISOR_STARTSECS`` (plus a margin), so that the exit that follows is judged by its
    code. A no-op otherwise."""
    if not os.environ.get("SUPERVISOR_ENABLED"):
        return
    left = SUPERVISOR_STARTSECS + 0.5 - _process_age()
    if left > 0:
        print(f"configuration error: exiting (status 2) in {left:.1f} s, once supervisord counts this a "
              "start, so that it does not restart it", file=sys.stderr, flush=True)
        time.sleep(left)


def _process_age() -> float:
    """Seconds since this process started (from /proc; since this module was imported elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()
