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
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import venues
from common.numbers import BadNumber, parse_decimal

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "deploy" / "bookmux.toml"

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
VENUE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
KNOWN_KINDS = tuple(venues.KINDS)


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

    def dust_rule(self, symbol: str) -> DustRule:
        return self.dust.get(symbol, self.dust.get("*", NO_DUST))

    @property
    def processes(self) -> tuple[Shard, ...]:
        """The feed processes of this venue: its ``[[venues.<id>.shards]]``, or one with the
        venue's own symbols and endpoints. Subscribers see one venue id whatever the split."""
        return self.shards or (Shard(0, self.symbols, self.pub, self.ctl, self.cpu),)

    def shard(self, index: int) -> VenueConfig:
        """This venue as run by feed process ``index`` (its symbols, endpoints and CPU)."""
        procs = self.processes
        if not 0 <= index < len(procs):
            raise ConfigError(f"venues.{self.id} has {len(procs)} feed process(es); --shard {index} is not one")
        sh = procs[index]
        return replace(self, symbols=sh.symbols, pub=sh.pub, ctl=sh.ctl, cpu=sh.cpu, shards=())


@dataclass(frozen=True)
class AggregatorConfig:
    pub: str
    ctl: str
    query: str
    down_after: float
    depletion: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PublisherConfig:
    bind: str
    port: int
    sndhwm: int
    #: The latest-per-symbol endpoint (ROUTER, see services/publisher/latest.py); None: not served.
    latest_port: int | None = None

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


# --- loading ----------------------------------------------------------------------------------

_TOP_KEYS = {"symbols", "levels", "log_level", "run_dir", "max_msg_size", "venues", "aggregator",
             "publisher", "simulator", "security", "gateway_grpc"}
_VENUE_KEYS = {"kind", "api", "enabled", "symbols", "ws_url", "rest_url", "pub", "ctl", "stale_after", "depth",
               "taker_fee", "cpu", "dust", "options", "shards"}
_AGG_KEYS = {"pub", "ctl", "query", "down_after", "depletion"}
_PUB_KEYS = {"bind", "port", "sndhwm", "latest_port"}
_GW_GRPC_KEYS = {"enabled", "bind", "port", "symbol", "levels", "max_clients"}


def _unknown(where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _get(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in d:
        if default is ...:
            raise ConfigError(f"{where}.{key} is required")
        return default
    v = d[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise ConfigError(f"{where}.{key} must be {getattr(typ, '__name__', typ)}, got {v!r}")
    return v


def _decimal(v: Any, where: str) -> Decimal:
    if isinstance(v, float):
        raise ConfigError(f"{where}: write decimals as strings (\"0.001\"), not floats ({v!r})")
    try:
        return parse_decimal(str(v) if isinstance(v, int) else v)
    except BadNumber as e:
        raise ConfigError(f"{where}: {e}") from None


def _symbols(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [s for s in v.split(",") if s.strip()]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ConfigError(f"{where} must be a list of symbols like \"BTC/USDT\"")
    out = []
    for s in v:
        s = s.strip().upper()
        if not SYMBOL_RE.match(s):
            raise ConfigError(f"{where}: {s!r} is not a symbol of the form BASE/QUOTE (e.g. BTC/USDT)")
        if s not in out:
            out.append(s)
    return tuple(out)


def _venue(vid: str, d: Any, symbols: tuple[str, ...]) -> VenueConfig:
    where = f"venues.{vid}"
    if not VENUE_RE.match(vid):
        raise ConfigError(f"{where}: venue ids are lowercase letters, digits and _ ({vid!r})")
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a table")
    _unknown(where, d, _VENUE_KEYS)
    kind = _get(d, "kind", str, where, vid)
    if kind not in KNOWN_KINDS:
        raise ConfigError(f"{where}.kind {kind!r} is not one of {list(KNOWN_KINDS)}")
    apis = venues.KINDS[kind].apis
    api = _get(d, "api", str, where, venues.KINDS[kind].default_api)
    if api not in apis:
        raise ConfigError(f"{where}.api {api!r}: a {kind} venue speaks {sorted(apis)}")
    dust: dict[str, DustRule] = {}
    for sym, rule in _get(d, "dust", dict, where, {}).items():
        w = f"{where}.dust.{sym}"
        if not isinstance(rule, dict):
            raise ConfigError(f"{w} must be a table {{ min_amount = \"..\", min_notional = \"..\" }}")
        _unknown(w, rule, {"min_amount", "min_notional"})
        key = sym if sym == "*" else _symbols([sym], w)[0]
        dust[key] = DustRule(_decimal(rule.get("min_amount", "0"), w + ".min_amount"),
                             _decimal(rule.get("min_notional", "0"), w + ".min_notional"))
    cpu = d.get("cpu")
    if cpu is not None and (not isinstance(cpu, int) or cpu < 0):
        raise ConfigError(f"{where}.cpu must be a CPU number >= 0")
    stale_after = _get(d, "stale_after", float, where, 10.0)
    depth = _get(d, "depth", int, where, 1000)
    if stale_after <= 0 or depth <= 0:
        raise ConfigError(f"{where}: stale_after and depth must be > 0")
    # A venue's own list names what it lists; it carries those of the top-level symbols (so
    # --symbols narrows every venue, and no venue is asked for a pair it does not have).
    venue_symbols = symbols
    if d.get("symbols"):
        own = _symbols(d["symbols"], where + ".symbols")
        venue_symbols = own if d.get("shards") else tuple(s for s in symbols if s in own)
    shards = _shards(d.get("shards"), venue_symbols, where)
    if shards:
        venue_symbols = tuple(s for sh in shards for s in sh.symbols)
    return VenueConfig(
        id=vid, kind=kind, api=api, enabled=_get(d, "enabled", bool, where, True),
        symbols=venue_symbols, shards=shards,
        ws_url=_get(d, "ws_url", str, where), rest_url=_get(d, "rest_url", str, where),
        pub=shards[0].pub if shards else _get(d, "pub", str, where),
        ctl=shards[0].ctl if shards else _get(d, "ctl", str, where),
        stale_after=stale_after, depth=depth,
        taker_fee=_decimal(d.get("taker_fee", "0"), where + ".taker_fee"), cpu=cpu, dust=dust,
        options=dict(_get(d, "options", dict, where, {})),
    )


def _shards(raw: Any, symbols: tuple[str, ...], where: str) -> tuple[Shard, ...]:
    """``[[venues.<id>.shards]]``: the venue's symbols split over several feed processes, each with
    ``symbols``, ``pub``, ``ctl`` and an optional ``cpu``. A symbol may be in one shard only."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw or not all(isinstance(x, dict) for x in raw):
        raise ConfigError(f"{where}.shards must be an array of tables [[{where}.shards]]")
    out: list[Shard] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw):
        w = f"{where}.shards[{i}]"
        _unknown(w, t, {"symbols", "pub", "ctl", "cpu"})
        syms = _symbols(_get(t, "symbols", list, w), w + ".symbols")
        for sym in syms:
            if sym in seen:
                raise ConfigError(f"{w}: {sym} is already in shard {seen[sym]}")
            seen[sym] = i
        cpu = t.get("cpu")
        if cpu is not None and (not isinstance(cpu, int) or cpu < 0):
            raise ConfigError(f"{w}.cpu must be a CPU number >= 0")
        out.append(Shard(i, syms, _get(t, "pub", str, w), _get(t, "ctl", str, w), cpu))
    ends = [e for sh in out for e in (sh.pub, sh.ctl)]
    if len(set(ends)) != len(ends):
        raise ConfigError(f"{where}.shards: every shard needs its own pub and ctl endpoints")
    return tuple(out)


def _gateway_grpc(raw: Any, *, carried: list[str], levels: int, publisher: PublisherConfig) -> GatewayGrpcConfig:
    """Validate ``[gateway_grpc]``: every error names its key."""
    where = "gateway_grpc"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    _unknown(where, raw, _GW_GRPC_KEYS)
    port = _get(raw, "port", int, where, 50051)
    if not 0 < port < 65536:
        raise ConfigError(f"{where}.port {port} is not a TCP port")
    bind = _get(raw, "bind", str, where, "127.0.0.1")
    if not bind.strip():
        raise ConfigError(f"{where}.bind must be an address such as \"127.0.0.1\"")
    if port == publisher.port and (bind == publisher.bind or "0.0.0.0" in (bind, publisher.bind)):
        raise ConfigError(f"{where}.port {port} is publisher.port: give the gRPC gateway its own port (50051)")
    symbol = _get(raw, "symbol", str, where, "")
    if symbol:
        symbol = _symbols([symbol], f"{where}.symbol")[0]
        if symbol not in carried and _get(raw, "enabled", bool, where, False):
            raise ConfigError(f"{where}.symbol {symbol} is not a configured symbol; configured: {carried}")
    else:
        symbol = carried[0]
    gw_levels = _get(raw, "levels", int, where, levels)
    if not 1 <= gw_levels <= 1000:
        raise ConfigError(f"{where}.levels must be 1..1000, got {gw_levels}")
    max_clients = _get(raw, "max_clients", int, where, 1000)
    if max_clients < 1:
        raise ConfigError(f"{where}.max_clients must be >= 1, got {max_clients}")
    if bind not in ("127.0.0.1", "localhost", "::1"):
        import logging

        logging.getLogger("config").warning(
            "gateway_grpc.bind %s is not loopback: the gRPC gateway has no TLS, anyone who reaches it can read", bind)
    return GatewayGrpcConfig(enabled=_get(raw, "enabled", bool, where, False), bind=bind, port=port,
                             symbol=symbol, levels=gw_levels, max_clients=max_clients)


def build(raw: Mapping[str, Any], source: str = "") -> Config:
    """Validate a raw mapping (as read from TOML) into a frozen :class:`Config`."""
    _unknown("config", raw, _TOP_KEYS)
    symbols = _symbols(raw.get("symbols", []), "symbols")
    levels = _get(raw, "levels", int, "config", 10)
    if not 1 <= levels <= 1000:
        raise ConfigError(f"levels must be 1..1000, got {levels}")
    venues_raw = _get(raw, "venues", dict, "config", {})
    venues = {vid: _venue(vid, d, symbols) for vid, d in venues_raw.items()}
    if not any(v.enabled for v in venues.values()):
        raise ConfigError("no venue is enabled")
    enabled_syms = {s for v in venues.values() if v.enabled for s in v.symbols}
    if not enabled_syms:
        raise ConfigError("no symbols configured (symbols = [\"BTC/USDT\"] or --symbols BTC/USDT)")
    agg = _get(raw, "aggregator", dict, "config", {})
    _unknown("aggregator", agg, _AGG_KEYS)
    depletion: dict[str, tuple[Decimal, ...]] = {}
    for sym, sizes in _get(agg, "depletion", dict, "aggregator", {}).items():
        w = f"aggregator.depletion.{sym}"
        if not isinstance(sizes, list) or not sizes:
            raise ConfigError(f"{w} must be a list of sizes like [\"1\", \"5\"]")
        ds = tuple(_decimal(s, w) for s in sizes)
        if any(not x for x in ds):
            raise ConfigError(f"{w}: sizes must be > 0")
        depletion[_symbols([sym], w)[0]] = ds
    pub = _get(raw, "publisher", dict, "config", {})
    _unknown("publisher", pub, _PUB_KEYS)
    port = _get(pub, "port", int, "publisher", 50052)
    if not 0 < port < 65536:
        raise ConfigError(f"publisher.port {port} is not a TCP port")
    latest_port = _get(pub, "latest_port", int, "publisher", None)
    if latest_port is not None and (not 0 < latest_port < 65536 or latest_port == port):
        raise ConfigError(f"publisher.latest_port {latest_port} is not a TCP port other than publisher.port")
    down_after = _get(agg, "down_after", float, "aggregator", 3.0)
    max_msg_size = _get(raw, "max_msg_size", int, "config", 64 * 1024 * 1024)
    log_level = _get(raw, "log_level", str, "config", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level {log_level!r} is not DEBUG/INFO/WARNING/ERROR")
    sec = _get(raw, "security", dict, "config", {})
    _unknown("security", sec, {"curve", "keys_dir"})
    security = SecurityConfig(curve=_get(sec, "curve", bool, "security", False),
                              keys_dir=_get(sec, "keys_dir", str, "security", "keys"))
    if security.curve is False and pub.get("bind", "127.0.0.1") not in ("127.0.0.1", "localhost", "::1"):
        import logging

        logging.getLogger("config").warning(
            "publisher.bind %s is not loopback and CURVE is off: anyone who reaches it can subscribe",
            pub.get("bind"))
    publisher = PublisherConfig(bind=_get(pub, "bind", str, "publisher", "127.0.0.1"), port=port,
                                sndhwm=_get(pub, "sndhwm", int, "publisher", 1000), latest_port=latest_port)
    carried = list(dict.fromkeys([*symbols, *(s for v in venues.values() if v.enabled for s in v.symbols)]))
    gateway_grpc = _gateway_grpc(raw.get("gateway_grpc", {}), carried=carried, levels=levels, publisher=publisher)
    return Config(
        symbols=symbols, levels=levels, log_level=log_level, security=security, gateway_grpc=gateway_grpc,
        run_dir=_get(raw, "run_dir", str, "config", "run"), max_msg_size=max_msg_size,
        venues=venues,
        aggregator=AggregatorConfig(
            pub=_get(agg, "pub", str, "aggregator", "tcp://127.0.0.1:50054"),
            ctl=_get(agg, "ctl", str, "aggregator", "tcp://127.0.0.1:50055"),
            query=_get(agg, "query", str, "aggregator", "tcp://127.0.0.1:50053"),
            down_after=down_after, depletion=depletion),
        publisher=publisher,
        simulator=dict(_get(raw, "simulator", dict, "config", {})),
        source=source,
    )


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"--set {dotted!r}: empty key part")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted!r}: {p!r} is not a table")
        cur = nxt
    cur[parts[-1]] = value


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
        raw["symbols"] = list(_symbols(symbols if isinstance(symbols, str) else list(symbols), "--symbols"))
        for vid, v in raw.get("venues", {}).items():
            if isinstance(v, dict) and v.get("shards") and v.get("enabled", True):
                raise ConfigError(f"--symbols cannot re-split venues.{vid}.shards: list the symbols "
                                  "in the shards of the config instead")
    if levels is not None:
        raw["levels"] = levels
    if venues:
        wanted = [x.strip() for x in (venues.split(",") if isinstance(venues, str) else venues) if x.strip()]
        unknown = sorted(set(wanted) - set(raw.get("venues", {})))
        if unknown:
            raise ConfigError(f"--venues: unknown venue(s) {unknown}; configured: {sorted(raw.get('venues', {}))}")
        for vid, v in raw.get("venues", {}).items():
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
    """Load the config named by :func:`add_config_args` flags."""
    sets = list(args.sets)
    if getattr(args, "log_level", None):
        sets.append(f"log_level={args.log_level!r}")
    return load(args.config, symbols=args.symbols or None, levels=args.levels,
                venues=args.venues or None, sets=sets)
