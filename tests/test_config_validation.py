"""Configuration that cannot crash a service: every key of the schema (common/config.py), every
venue option of every venue API and every [simulator] setting given a wrong value is a start-up
error naming the key; real service processes exit 2 with the key on their last stderr line; a real
supervisord does not restart them; supervisord's % expansion does not mangle generated values."""

from __future__ import annotations

import copy
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from common import config, venues
from common.config import ConfigError, WrongValues
from common.feed.runner import RUNNER_OPTIONS
from deploy import supervisor
from tests.harness import wait_until, write_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "deploy" / "demo.toml"
BASE: dict[str, Any] = tomllib.loads(DEMO.read_text())
SHARDED_VENUE = "gemini"        # one venue of the base split into shards, to reach the shard keys
BASE["venues"][SHARDED_VENUE].pop("metrics")
BASE["venues"][SHARDED_VENUE]["shards"] = [{"symbols": ["BTC/USD"], "pub": "tcp://127.0.0.1:50072",
                                            "ctl": "tcp://127.0.0.1:50073", "cpu": 0,
                                            "metrics": "127.0.0.1:50116"}]
# the aggregator split in two shards (deploy/ports.py's plan), to reach [[aggregator.shards]]'s keys
BASE["aggregator"]["shards"] = [
    {"symbols": ["BTC/USDT", "ETH/USDT"], "pub": "tcp://127.0.0.1:50054", "ctl": "tcp://127.0.0.1:50055",
     "query": "tcp://127.0.0.1:50053", "metrics": "127.0.0.1:50100"},
    {"symbols": ["BTC/USD"], "pub": "tcp://127.0.0.1:50057", "ctl": "tcp://127.0.0.1:50058",
     "query": "tcp://127.0.0.1:50059", "metrics": "127.0.0.1:50103"}]


# --- wrong values generated from the schema ---------------------------------------------------


def _strip(ann: Any) -> tuple[Any, list[Any]]:
    """(the bare type, the metadata found on the way) through Annotated and ``X | None``."""
    meta: list[Any] = []
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann, *more = get_args(ann)
            for m in more:
                meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(ann) if a is not type(None)]
            assert len(rest) == 1, ann
            ann = rest[0]
        else:
            return ann, meta


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _wrong_scalars(t: Any, meta: list[Any]) -> list[Any]:
    """Values of type ``t`` (with constraints ``meta``) that must be refused: one of another type,
    one past each bound, and the type's own WrongValues."""
    out: list[Any] = []
    if t is bool:
        out.append("yes")
    elif t in (int, float):
        out.append("soon")
    elif t is Decimal:
        out.append(True)
    elif t is str:
        out.append(12345)
    elif get_origin(t) is Literal:
        out += ["bogus", 12345]
    elif get_origin(t) in (list, dict):
        out.append(5)
    elif t is Any:
        pass
    else:
        raise AssertionError(f"no wrong value for {t!r}: teach this test the type")
    step = 1 if t is int else 0.01
    for m in meta:
        if isinstance(m, at.Gt):
            out.append(m.gt if t is not Decimal else str(m.gt))
        elif isinstance(m, at.Ge):
            out.append(m.ge - step if t is not Decimal else str(m.ge - 1))
        elif isinstance(m, at.Lt):
            out.append(m.lt if t is not Decimal else str(m.lt))
        elif isinstance(m, at.Le):
            out.append(m.le + step)
        elif isinstance(m, at.MinLen) and m.min_length > 0:
            out.append({} if get_origin(t) is dict else ([] if get_origin(t) is list else ""))
        elif isinstance(m, at.MaxLen) and get_origin(t) is list:
            out.append([0] * (m.max_length + 1))
        elif isinstance(m, WrongValues):
            out += list(m.values)
    if t is float:
        out.append(math.nan)
    return out


def cases(model: type[BaseModel], path: tuple[Any, ...], base: Any) -> Iterator[tuple[tuple[Any, ...], Any, str]]:
    """(path to set, wrong value, the key the error must name) for every field of ``model`` and
    of every table inside it, ``base`` being the valid table at ``path`` to recurse along."""
    for name, f in model.model_fields.items():
        key = (*path, name)
        t, meta = _strip(f.annotation)
        meta = [*f.metadata, *meta]
        here = base.get(name) if isinstance(base, dict) else None
        if f.is_required():
            yield key, DELETE, _dotted(key)
        if _is_model(t):
            yield key, 5, _dotted(key)
            yield from cases(t, key, here or {})
            continue
        if get_origin(t) is dict:
            kt, vt = get_args(t)
            vt, vmeta = _strip(vt)
            for bad in _wrong_scalars(t, meta):
                yield key, bad, _dotted(key)
            _, kmeta = _strip(kt)
            for bad_key in (k for wv in kmeta if isinstance(wv, WrongValues) for k in wv.values):
                if isinstance(bad_key, str):
                    yield (*key, bad_key), _example(vt), _dotted((*key, bad_key))
            item = next(iter(here)) if here else "BTC/USD"      # the keys of tables without one are symbols
            if _is_model(vt):
                for each in here or [item]:                     # every venue of the base, every dust rule...
                    yield from cases(vt, (*key, each), (here or {}).get(each, {}))
            elif vt is not Any:
                for bad in _wrong_scalars(vt, vmeta):
                    yield (*key, item), bad, _dotted((*key, item))
            continue
        if get_origin(t) is list:
            (it,) = get_args(t)
            it, imeta = _strip(it)
            for bad in _wrong_scalars(t, meta):
                yield key, bad, _dotted(key)
            if _is_model(it):
                if here:                                        # the base's shards (one venue has them)
                    yield from cases(it, (*key, 0), here[0])
            else:
                n = next((m.min_length for m in meta if isinstance(m, at.MinLen)), 1)
                for bad in _wrong_scalars(it, imeta):
                    yield key, [bad] * max(n, 1), _dotted(key)
            continue
        for bad in _wrong_scalars(t, meta):
            yield key, bad, _dotted(key)


DELETE = object()


def _example(t: Any) -> Any:
    """A value of a table's type good enough that only the key is wrong."""
    return {} if _is_model(t) else 1.0


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _set(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    cur: Any = raw
    for p in path[:-1]:
        if isinstance(cur, dict):
            cur = cur.setdefault(p, {})
        else:
            cur = cur[p]
    if value is DELETE:
        cur.pop(path[-1], None)
    else:
        cur[path[-1]] = value
    return raw


def option_cases() -> Iterator[tuple[tuple[Any, ...], Any, str, dict[str, Any]]]:
    """Every venue option of every API of every kind, on a venue of that kind in the base."""
    for vid, v in BASE["venues"].items():
        kind = v.get("kind", vid)
        for api in venues.KINDS[kind].apis:
            base = _set(BASE, ("venues", vid, "api"), api)
            model = config.options_model(kind, api)
            for path, bad, key in cases(model, ("venues", vid, "options"), {}):
                yield path, bad, key, base


def all_cases() -> list[tuple[str, Any, str, dict[str, Any]]]:
    out = [(_dotted(p), bad, key, _set(BASE, p, bad)) for p, bad, key in cases(config.ConfigFile, (), BASE)]
    out += [(_dotted(p), bad, key, _set(base, p, bad)) for p, bad, key, base in option_cases()]
    return out


CASES = all_cases()


def test_the_base_config_is_valid() -> None:
    """The config the wrong values are put into is itself valid (so each error is the one value's)."""
    c = config.build(BASE)
    assert [sh.metrics for sh in c.venue(SHARDED_VENUE).shards] == ["127.0.0.1:50116"]
    assert [a.symbols for a in c.aggregator.processes] == [("BTC/USDT", "ETH/USDT"), ("BTC/USD",)]


def test_every_key_and_option_is_covered() -> None:
    """The generated list reaches every field of every table and every option of every venue API."""
    keys = {key for _, _, key, _ in CASES}
    names = {part.split("[")[0] for key in keys for part in key.split(".")}
    for needed in ("publisher.sndhwm", "max_msg_size", "aggregator.down_after", "aggregator.pub",
                   "venues.binance.options.rest_concurrency", "venues.binance.options.ping_every",
                   "venues.binance.options.depth_speed", "venues.coinbase.options.channel",
                   "venues.gemini.shards[0].metrics", "venues.binance.quiet_after_symbols.BTC/USD",
                   "venues.binance.capture_rotate_mb", "simulator.rate", "simulator.venues.binance.port",
                   "simulator.venues.binance.levels.BTC/USD", "gateway_grpc.metrics", "security.keys_dir",
                   "aggregator.shards", "aggregator.shards[0].symbols", "aggregator.shards[0].pub",
                   "aggregator.shards[0].ctl", "aggregator.shards[0].query", "aggregator.shards[0].metrics"):
        assert needed in keys, needed
    models = [config.ConfigFile, config.VenueTable, config.SimulatorTable, config.AggregatorTable,
              config.PublisherTable, config.GatewayGrpcTable, config.ShardTable, config.DustTable,
              config.SimulatorVenueTable, config.SecurityTable, config.AggregatorShardTable]
    models += [config.options_model(kind, api) for kind, entry in venues.KINDS.items() for api in entry.apis]
    for model in models:
        assert set(model.model_fields) <= names, (model, set(model.model_fields) - names)
    for kind, entry in venues.KINDS.items():
        vid = next(v for v, t in BASE["venues"].items() if t.get("kind", v) == kind)
        for api in entry.apis:
            for name, default in venues.load_spec(kind, api).options.items():
                assert f"venues.{vid}.options.{name}" in keys, (kind, api, name, default)


@pytest.mark.parametrize("path,bad,key,raw", CASES, ids=[f"{p}={b!r}"[:80] for p, b, _, _ in CASES])
def test_a_wrong_value_is_a_startup_error_naming_the_key(path: str, bad: Any, key: str, raw: dict[str, Any]) -> None:
    """Each wrong value of each key is a ConfigError from build() whose message names the key."""
    with pytest.raises(ConfigError) as e:
        config.build(raw)
    assert key in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_runner_options_schema_matches_the_runner() -> None:
    """The schema's runner options are exactly common/feed/runner.py's RUNNER_OPTIONS, same defaults."""
    model = config.RunnerOptions
    assert set(model.model_fields) == set(RUNNER_OPTIONS)
    assert {k: f.default for k, f in model.model_fields.items()} == RUNNER_OPTIONS


@pytest.mark.parametrize("sets,message", [
    (["venues.binance.options.backoff_cap=0.1"],
     "venues.binance.options.backoff_cap: 0.1 is below backoff_initial 0.5"),
    (["venues.binance.options.rest_concurrency=0"], "venues.binance.options.rest_concurrency must be >= 1, got 0"),
    (["venues.binance.options.ping_every=0"], "venues.binance.options.ping_every must be > 0, got 0"),
    (["venues.binance.options.open_timeout='ten'"], "venues.binance.options.open_timeout must be float, got 'ten'"),
    (["venues.binance.options.colour=1"], "venues.binance.options: unknown key(s) ['colour']; allowed: ["),
    (["publisher.sndhwm=-5"], "publisher.sndhwm must be >= 1, got -5"),
    (["simulator.max_levels=10"], "simulator.max_levels: 10 is below min_levels 250"),
    (["simulator.venues.binance.levels.ETH/BTC=9"], "simulator.venues.binance.levels: ['ETH/BTC'] not among"),
    (["venues.kraken.depth=7"], "venues.kraken.depth is 7; Kraken's book depth must be one of"),
    (["venues.bitstamp.pub='tcp://127.0.0.1:50060'"], "venues.bitstamp.pub tcp://127.0.0.1:50060 is also venues."),
    (["gateway_grpc.metrics='127.0.0.1:50110'"], "venues.binance.metrics 127.0.0.1:50110 is also gateway_grpc"),
    (["venues.coinbase.api='pro'"], "venues.coinbase.api 'pro': a coinbase venue speaks ['advanced', 'exchange']"),
    (["publisher.latest_port=50052"], "publisher.latest_port: 50052 is not a TCP port other than publisher.port"),
    (["aggregator.pub='tcp://10.0.0.1:50054'"], "aggregator.pub: '10.0.0.1' is not a loopback address and "
                                                "security.curve is off"),
    (["simulator.venues.zeta.port=1"], "simulator.venues.zeta.kind: the id 'zeta' is not a kind"),
])
def test_cross_key_rules_name_the_key(sets: list[str], message: str) -> None:
    """Rules spanning keys (bounds against each other, the venue's own, duplicates) name the key too."""
    with pytest.raises(ConfigError) as e:
        config.load(DEMO, sets=sets)
    assert str(e.value).startswith(message) or message in str(e.value), str(e.value)


def test_good_options_reach_the_venue_config() -> None:
    """Valid options are kept (numbers as given, ints for floats widened) and the runner takes them."""
    c = config.load(DEMO, sets=["venues.binance.options.ping_every=2", "venues.binance.options.depth_speed=''",
                                "venues.binance.options.precision=[2, 8]", "venues.coinbase.api='exchange'",
                                "venues.coinbase.options.channel='level2'"])
    assert dict(c.venue("binance").options) == {"ping_every": 2.0, "depth_speed": "", "precision": [2, 8]}
    assert dict(c.venue("coinbase").options) == {"channel": "level2"}


# --- real processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_services_exit_2_naming_the_key_on_the_last_stderr_line(tmp_path: Path) -> None:
    """A feed, the aggregator, the publisher, the gRPC gateway and the simulator each exit 2 at
    start with the wrong key on the last line of stderr (a feed refuses another service's key too)."""
    runs = {
        "feed": (["services.feed_binance", "--venue", "binance"], "publisher.sndhwm=-5", "publisher.sndhwm"),
        "feed_option": (["services.feed_kraken", "--venue", "kraken"], "venues.kraken.options.ping_every=0",
                        "venues.kraken.options.ping_every"),
        "aggregator": (["services.aggregator"], "venues.binance.options.rest_concurrency=0",
                       "venues.binance.options.rest_concurrency"),
        "publisher": (["services.publisher"], "aggregator.down_after='soon'", "aggregator.down_after"),
        "gateway_grpc": (["services.gateway_grpc"], "max_msg_size=0", "max_msg_size"),
        "simulator": (["services.simulator"], "simulator.venues.binance.port=-1", "simulator.venues.binance.port"),
    }
    procs = {}
    env = {k: v for k, v in os.environ.items() if k != "SUPERVISOR_ENABLED"}
    try:
        for name, (module, sets, _) in runs.items():
            procs[name] = subprocess.Popen([sys.executable, "-m", *module, "--config", str(DEMO), "--set", sets],
                                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                           start_new_session=True)
        for name, (_, _, key) in runs.items():
            _, err = procs[name].communicate(timeout=120)
            last = err.decode().strip().splitlines()[-1]
            assert procs[name].returncode == 2, (name, err.decode())
            assert key in last, (name, last)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_simulator_flags_are_validated_like_the_file() -> None:
    """settings_from: a flag's wrong value is refused through the same schema, naming its key."""
    from services.simulator.app import SettingsError, settings_from

    raw = {"venues": {"binance": {"kind": "binance", "port": 0}}}
    assert settings_from(raw, ("BTC/USDT",), rate=3.0).rate == 3.0
    for kw, key in (({"rate": -1.0}, "simulator.rate"), ({"control_port": 70000}, "simulator.control_port"),
                    ({"replay_speed": -2.0}, "simulator.replay_speed"),
                    ({"ping_interval": 0.0}, "simulator.ping_interval")):
        with pytest.raises(SettingsError) as e:
            settings_from(raw, ("BTC/USDT",), **kw)
        assert str(e.value).startswith(key), str(e.value)
    with pytest.raises(SettingsError, match=r"^simulator\.venues\.binance\.kind: 'ftx' is not one of"):
        settings_from({"venues": {"binance": {"kind": "ftx", "port": 0}}}, ())


# --- supervisord -------------------------------------------------------------------------------


def test_supervisor_escapes_percent_in_every_value(tmp_path: Path) -> None:
    """A % in the run directory, the config path or a --set value reaches supervisord as written."""
    from supervisor.options import ServerOptions

    d = tmp_path / "r%(here)s 100%"
    d.mkdir()
    cfg_path = d / "b%d.toml"
    write_config(cfg_path, venues={"binance": {}}, symbols=["BTC/USDT"])
    c = config.load(cfg_path)
    flags = ["--config", str(cfg_path), "--set", "venues.binance.capture='/tmp/%(ENV_HOME)s%'"]
    text = supervisor.render(c, flags=flags, demo=False, python=sys.executable)
    (d / "logs").mkdir()
    conf = d / "supervisord.conf"
    conf.write_text(text)
    opts = ServerOptions()
    opts.realize(args=["-c", str(conf)])
    assert opts.logfile == f"{d}/logs/supervisord.log" and opts.pidfile == f"{d}/supervisord.pid"
    assert opts.childlogdir == f"{d}/logs"
    progs = {p.name: p for g in opts.process_group_configs for p in g.process_configs}
    feed = progs["feed_binance"]
    import shlex
    assert shlex.split(feed.command) == [sys.executable, "-m", "services.feed_binance", "--venue", "binance",
                                         "--shard", "0", *flags]
    assert feed.stdout_logfile == f"{d}/logs/feed_binance.log" and feed.directory == str(REPO)


@pytest.mark.slow
def test_supervisord_does_not_restart_a_service_with_a_wrong_config() -> None:
    """A real supervisord: programs whose config turned wrong exit 2 once (expected) and are not
    restarted; the key is on the last line of each program's log; % in paths survives."""
    supervisord = Path(sys.executable).parent / "supervisord"
    assert supervisord.exists(), "supervisord is a dependency (pyproject)"
    d = Path(tempfile.mkdtemp(prefix="bm%(here)s%", dir="/tmp"))   # short: the unix socket path limit
    proc = None
    try:
        cfg_path = d / "c%s.toml"
        write_config(cfg_path, venues={"binance": {}}, symbols=["BTC/USDT"])
        out = subprocess.run([sys.executable, "-m", "deploy.supervisor", "--config", str(cfg_path)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        conf = Path(out.stdout.strip())
        assert conf == d / "supervisord.conf"
        # The operator edits the config afterwards and gets it wrong: every service refuses it.
        cfg_path.write_text(cfg_path.read_text().replace("sndhwm = 1000", "sndhwm = -5"))
        proc = subprocess.Popen([str(supervisord), "-n", "-c", str(conf)], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        log = d / "logs" / "supervisord.log"
        programs = ("feed_binance", "aggregator", "publisher")

        def all_exited() -> bool:
            text = log.read_text() if log.exists() else ""
            return all(f"exited: {p} (exit status 2; expected)" in text for p in programs)

        wait_until(all_exited, timeout=120, what="every program to exit 2")
        status = subprocess.run([str(Path(sys.executable).parent / "supervisorctl"), "-c", str(conf), "status"],
                                capture_output=True, text=True, timeout=60)
        states = {line.split()[0].split(":")[-1]: line.split()[1] for line in status.stdout.splitlines() if line}
        assert states == dict.fromkeys(programs, "EXITED"), status.stdout
        text = log.read_text()
        for p in programs:
            assert text.count(f"spawned: '{p}'") == 1, text
            last = (d / "logs" / f"{p}.log").read_text().strip().splitlines()[-1]
            assert "publisher.sndhwm must be >= 1, got -5" in last, (p, last)
        assert "BACKOFF" not in text and "gave up" not in text, text
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(d, ignore_errors=True)
