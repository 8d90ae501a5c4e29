"""The simulator as one object: settings, venues, the market tickers, pause/resume and faults.

:class:`Simulator` is what ``__main__`` runs and what the tests start in-process; the control
interface (``control.py``) is a thin HTTP layer over its methods.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import venues as registry
from common.config import ConfigError, validate_simulator
from services.simulator.bitstamp import BitstampServer
from services.simulator.market import Market, canonical, spec_for
from services.simulator.venue import RestFault, VenueServer

log = logging.getLogger("simulator")

#: Faults every venue takes. A server class may add its own in ``FAULTS`` (kind -> one line of
#: help) and handle them, or change a generic one, in ``venue_fault(kind, symbol, params)``, which
#: returns the reply's extra keys (None: the generic handling applies; ValueError: a bad request).
FAULT_KINDS = ("gap", "drop", "silence", "rest_error", "rate_limit", "lag_snapshot", "malformed",
               "shutdown", "unlist", "relist")


class SettingsError(ConfigError):
    """The [simulator] section or a flag is wrong; the message says which key and why."""


class FaultError(ValueError):
    """A /fault request names an unknown venue, kind or symbol, or a bad parameter."""


@dataclass(frozen=True)
class VenueSettings:
    id: str
    kind: str
    port: int
    symbols: tuple[str, ...]
    replay: str | None = None
    levels: tuple[tuple[str, int], ...] = ()   # (symbol, levels per side) for deep books


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    control_port: int = 50090
    seed: int = 7
    rate: float = 10.0
    burst_probability: float = 0.01
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    history_seconds: float = 30.0
    min_levels: int = 250
    max_levels: int = 500
    replay_speed: float = 1.0
    replay_gate_timeout: float = 10.0
    venues: tuple[VenueSettings, ...] = field(default_factory=tuple)


def settings_from(raw: Mapping[str, Any], symbols: tuple[str, ...], **overrides: Any) -> Settings:
    """Validate the config's ``[simulator]`` table with flag overrides applied (``None`` = keep),
    against the one schema of common/config.py (every key typed and ranged, unknown keys refused,
    the error naming the key); then what only the simulator knows: a server (or a replay) for
    each venue's kind. Raises :class:`SettingsError`."""
    replays: dict[str, str] = dict(overrides.pop("replays", None) or {})
    data = copy.deepcopy(dict(raw))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        t = validate_simulator(data)
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    venues = []
    for vid, v in t.venues.items():
        where = f"simulator.venues.{vid}"
        kind = v.kind or vid
        replay = replays.pop(vid, None) or v.replay
        server_class(kind, f"{where}.kind")
        syms = tuple(v.symbols) if v.symbols is not None else tuple(s.upper() for s in symbols)
        bad = sorted(set(v.levels) - set(syms))
        if bad:
            raise SettingsError(f"{where}.levels: {bad} are not symbols of the venue; symbols: {list(syms)}")
        venues.append(VenueSettings(vid, kind, v.port, syms, replay, tuple(v.levels.items())))
    if replays:
        raise SettingsError(f"--replay: unknown venue(s) {sorted(replays)}; configured: {sorted(t.venues)}")
    return Settings(host=t.host, control_port=t.control_port, seed=t.seed, rate=t.rate,
                    burst_probability=t.burst_probability, ping_interval=t.ping_interval,
                    pong_timeout=t.pong_timeout, history_seconds=t.history_seconds, min_levels=t.min_levels,
                    max_levels=t.max_levels, replay_speed=t.replay_speed,
                    replay_gate_timeout=t.replay_gate_timeout, venues=tuple(venues))


def server_class(kind: str, where: str = "kind") -> type[VenueServer]:
    """The simulator's server class of ``kind`` (from the venue registry); SettingsError names the
    kinds the simulator can play when ``kind`` is not one of them."""
    try:
        cls: type[VenueServer] = registry.load_simulator(kind)
    except (registry.UnknownVenue, ImportError, AttributeError) as e:
        playable = []
        for k in sorted(registry.KINDS):
            try:
                registry.load_simulator(k)
                playable.append(k)
            except (ImportError, AttributeError):
                pass
        raise SettingsError(f"{where} {kind!r}: the simulator speaks {playable} ({e})") from None
    return cls


def _int(params: Mapping[str, str], key: str, default: int, lo: int = 0) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise FaultError(f"{key}={raw!r} is not an integer") from None
    if v < lo:
        raise FaultError(f"{key} must be >= {lo}")
    return v


def _float(params: Mapping[str, str], key: str, default: float) -> float:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise FaultError(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise FaultError(f"{key} must be a finite number >= 0")
    return v


class Simulator:
    """All simulated venues, their markets and tickers. Start with :meth:`start`, stop with
    :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.venues: dict[str, VenueServer] = {}
        self.paused = False
        self._running = asyncio.Event()
        self._running.set()
        self._tickers: list[asyncio.Task[None]] = []
        self.faults_injected: dict[str, dict[str, int]] = {}
        for vs in settings.venues:
            self.venues[vs.id] = self._make_venue(vs)

    def _make_venue(self, vs: VenueSettings) -> VenueServer:
        s = self.settings
        common: dict[str, Any] = {"host": s.host, "port": vs.port, "ping_interval": s.ping_interval,
                  "pong_timeout": s.pong_timeout}
        if vs.replay:
            from services.simulator.replay import make_replay_server
            return make_replay_server(vs.id, vs.kind, Path(vs.replay), speed=s.replay_speed,
                                      gate_timeout=s.replay_gate_timeout, **common)
        specs = {sym: spec_for(sym) for sym in vs.symbols}
        server = server_class(vs.kind)(vs.id, specs=specs, **common)
        deep = dict(vs.levels)
        for sym, spec in specs.items():
            rng = random.Random(f"{s.seed}:{vs.id}:{sym}")
            marker = rng.randint(10**8, 10**9) if vs.kind == "binance" else 0
            lo, hi = (deep[sym], deep[sym] + deep[sym] // 10) if sym in deep else (s.min_levels, s.max_levels)
            server.markets[sym] = Market(spec, rng, min_levels=lo, max_levels=hi,
                                         history_seconds=s.history_seconds, marker=marker)
            if vs.kind == "bitstamp":
                assert isinstance(server, BitstampServer)
                server.markets[sym].marker = server.next_us()
            added = getattr(server, "market_added", None)
            if added is not None:
                added(sym)
        return server

    @property
    def symbols(self) -> list[str]:
        seen: dict[str, None] = {}
        for v in self.venues.values():
            seen.update(dict.fromkeys(v.specs))
        return list(seen)

    async def start(self) -> None:
        for v in self.venues.values():
            await v.start()
            mode = "replay " + getattr(v, "source", "") if not v.markets else "live"
            log.info("venue %s (%s, %s) on ws://%s:%d and http://%s:%d: %s", v.id, v.kind, mode,
                     self.settings.host, v.port, self.settings.host, v.port, ", ".join(v.specs))
            for sym in v.markets:
                self._tickers.append(asyncio.ensure_future(self._ticker(v, sym)))

    async def stop(self) -> None:
        for t in self._tickers:
            t.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        for v in self.venues.values():
            await v.stop()

    # --- market clock --------------------------------------------------------------------------

    async def _ticker(self, venue: VenueServer, symbol: str) -> None:
        """Events at ``rate`` per second (exponential gaps) with occasional bursts of 5-20 quick
        events. Timing has its own RNG so event contents depend on the seed only."""
        s = self.settings
        rng = random.Random(f"{s.seed}:{venue.id}:{symbol}:timing")
        burst_left = 0
        while True:
            if s.rate <= 0:
                await asyncio.Event().wait()
            if burst_left:
                delay = rng.uniform(0.001, 0.01)
            else:
                delay = rng.expovariate(s.rate)
                if rng.random() < s.burst_probability:
                    burst_left = rng.randint(5, 20)
            await asyncio.sleep(delay)
            await self._running.wait()
            if self.paused:  # no await between this check and the emit: pause is exact
                continue
            first = burst_left > 0 and burst_left % 5 == 0
            burst_left = max(0, burst_left - 1)
            now = time.monotonic()
            for _ in range(venue.pending_gaps.pop(symbol, 0)):
                venue.emit(symbol, now, hidden=True)
            venue.emit(symbol, now, burst=first)

    async def pause(self) -> None:
        """Stop book changes everywhere; returns once no further book event will be sent."""
        self.paused = True
        self._running.clear()
        for v in self.venues.values():
            v.paused = True
        await asyncio.gather(*(v.drain() for v in self.venues.values()))

    def resume(self) -> None:
        self.paused = False
        for v in self.venues.values():
            v.paused = False
        self._running.set()

    # --- control queries -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ok": True, "paused": self.paused,
                "venues": {vid: v.health() for vid, v in self.venues.items()},
                "symbols": self.symbols}

    def venue(self, venue_id: str | None) -> VenueServer:
        if not venue_id:
            raise FaultError(f"venue= is required; known venues: {sorted(self.venues)}")
        v = self.venues.get(venue_id)
        if v is None:
            raise FaultError(f"unknown venue {venue_id!r}; known venues: {sorted(self.venues)}")
        return v

    def symbol(self, v: VenueServer, symbol: str | None, *, required: bool = True) -> str | None:
        if not symbol:
            if required:
                raise FaultError(f"symbol= is required; {v.id} serves {list(v.specs)}")
            return None
        s = symbol.upper()
        if s not in v.specs:
            raise FaultError(f"venue {v.id!r} does not serve symbol {symbol!r}; it serves {list(v.specs)}")
        return s

    def book(self, venue_id: str | None, symbol: str | None, depth: str | None = None) -> dict[str, Any]:
        """The true book of ``symbol`` on ``venue_id``; with ``depth`` only its best ``depth`` levels
        per side (what a client of a depth-limited subscription, e.g. Kraken's, holds)."""
        v = self.venue(venue_id)
        sym = self.symbol(v, symbol)
        assert sym is not None
        n = _int({"depth": depth} if depth else {}, "depth", 0, lo=1) or None
        bids, asks = v.book_levels(sym)
        out: dict[str, Any] = {"venue": v.id, "symbol": sym,
                               "bids": [[canonical(p), canonical(a)] for p, a in bids[:n]],
                               "asks": [[canonical(p), canonical(a)] for p, a in asks[:n]]}
        if n is not None:
            out["depth"] = n
        return out

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for vid, v in self.venues.items():
            d: dict[str, Any] = dict(v.stats)
            d["connections"] = len(v.conns)
            d["faults"] = dict(v.faults)
            for k in ("connections_total", "frames_sent", "events_generated", "events_sent",
                      "rest_requests", "snapshots_served"):
                d.setdefault(k, 0)
            out[vid] = d
        return {"paused": self.paused, "venues": out}

    def fault(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Inject one fault; see ``control.py`` for the parameters of each kind."""
        v = self.venue(params.get("venue"))
        kind = params.get("kind") or ""
        own: Mapping[str, str] = getattr(v, "FAULTS", {})
        if kind not in FAULT_KINDS and kind not in own:
            raise FaultError(f"unknown fault kind {kind!r} for {v.kind}; kinds: {list(FAULT_KINDS) + list(own)}")
        symbol = self.symbol(v, params.get("symbol"), required=kind in ("unlist", "relist"))
        live = bool(v.markets)
        result: dict[str, Any] = {"venue": v.id, "kind": kind}
        handler = getattr(v, "venue_fault", None)
        try:
            handled = handler(kind, symbol, params) if handler is not None else None
        except FaultError:
            raise
        except ValueError as e:
            raise FaultError(str(e)) from None
        if handled is not None:
            result.update(handled)
        elif kind == "gap":
            if not live:
                raise FaultError("gap needs the live market model (not available in replay mode)")
            count = _int(params, "count", 1, lo=1)
            for sym in [symbol] if symbol else list(v.markets):
                v.pending_gaps[sym] = v.pending_gaps.get(sym, 0) + count
            result.update(symbol=symbol, count=count)
        elif kind == "drop":
            result["connections"] = v.drop()
        elif kind == "silence":
            seconds = _float(params, "seconds", 5.0)
            v.silence(seconds)
            result["seconds"] = seconds
        elif kind == "rest_error":
            count, status = _int(params, "count", 1, lo=1), _int(params, "status", 500)
            if not 400 <= status <= 599:
                raise FaultError("rest_error status must be 400..599")
            v.rest_error = RestFault(count, status)
            result.update(count=count, status=status)
        elif kind == "rate_limit":
            count, status = _int(params, "count", 1, lo=1), _int(params, "status", 429)
            if status not in (429, 418):
                raise FaultError("rate_limit status must be 429 or 418")
            seconds = _float(params, "seconds", 1.0)
            retry = str(int(seconds)) if seconds == int(seconds) else repr(seconds)
            v.rate_limit = RestFault(count, status, retry)
            result.update(count=count, status=status, retry_after=retry)
        elif kind == "lag_snapshot":
            if not live:
                raise FaultError("lag_snapshot needs the live market model (not available in replay mode)")
            count, ms = _int(params, "count", 1, lo=1), _int(params, "ms", 1000)
            v.lag = (count, ms / 1000)
            result.update(count=count, ms=ms)
        elif kind == "malformed":
            count = _int(params, "count", 5, lo=1)
            result.update(count=count, frames=v.inject_malformed(count))
        elif kind == "shutdown":
            result["connections"] = v.shutdown()
        elif kind == "unlist":
            assert symbol is not None
            v.unlisted.add(symbol)
            result["symbol"] = symbol
        elif kind == "relist":
            assert symbol is not None
            v.unlisted.discard(symbol)
            result["symbol"] = symbol
        v.faults[kind] += 1
        log.info("fault injected: %s", result)
        return result
