"""Operations checks of a running deployment (``make demo`` or ``make run``) through the services'
metrics and health endpoints (``metrics = "host:port"`` in each table of the config). Scripts,
not tests: they report figures and never assert times.

  python -m bench.ops check [--config deploy/demo.toml] [--seconds 5]
      every service's /healthz and /readyz, and its main counters scraped twice ``--seconds``
      apart: which moved.

  python -m bench.ops targets [--config deploy/bookmux.toml]
      a Prometheus ``scrape_configs`` section with one job per process (``bookmux_<program>``,
      the job names deploy/alerts.yml expects), to paste into prometheus.yml.

  python -m bench.ops kill [--config deploy/demo.toml] [--venue binance] [--shard 0]
      ``kill -9`` of one feed process (its pid from supervisorctl, or ``--pid``), then how long
      until the aggregator's venue status metric (``bookmux_aggregator_venue_status{status="down"}``)
      and its ``/readyz`` (503) changed, and, once supervisord has restarted the feed, until the
      venue is ``live`` and ``/readyz`` 200 again. The endpoints are read every ``--every`` s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from common import config
from common.config import ConfigError

REPO = Path(__file__).resolve().parents[1]

#: What ``check`` compares between its two scrapes, per kind of service.
MOVING = {
    "feed": ("bookmux_feed_frames_total", "bookmux_feed_levels_total", "bookmux_feed_deltas_total"),
    "aggregator": ("bookmux_aggregator_bus_messages_total", "bookmux_aggregator_levels_total",
                   "bookmux_aggregator_snapshots_published_total", "bookmux_aggregator_latency_seconds_count"),
    "publisher": ("bookmux_publisher_snapshots_published_total", "bookmux_publisher_latency_seconds_count"),
    "gateway_grpc": ("bookmux_gateway_books_received_total",),
}


def get(address: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) of ``http://address/path``; (0, why) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return 0, str(e)


def scrape(address: str) -> dict[str, float]:
    """Every sample of ``/metrics`` as {'name{labels}': value}; {} when it does not answer."""
    status, text = get(address, "/metrics")
    if status != 200:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def summed(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.split("{", 1)[0] == name)


def endpoints(cfg: config.Config) -> dict[str, tuple[str, str]]:
    """Program name -> (kind, metrics address) of every process that has one."""
    out: dict[str, tuple[str, str]] = {}
    for v in cfg.enabled_venues:
        for sh in v.processes:
            addr = sh.metrics
            if addr:
                out[f"feed_{v.id}" if len(v.processes) == 1 else f"feed_{v.id}_{sh.index}"] = ("feed", addr)
    if cfg.aggregator.metrics:
        out["aggregator"] = ("aggregator", cfg.aggregator.metrics)
    if cfg.publisher.metrics:
        out["publisher"] = ("publisher", cfg.publisher.metrics)
    if cfg.gateway_grpc.enabled and cfg.gateway_grpc.metrics:
        out["gateway_grpc"] = ("gateway_grpc", cfg.gateway_grpc.metrics)
    return out


def targets(cfg: config.Config) -> int:
    """Print a scrape_configs section: one job per process with a metrics address."""
    eps = endpoints(cfg)
    if not eps:
        print("no service has a metrics address in the config (metrics = \"host:port\")", file=sys.stderr)
        return 2
    print("scrape_configs:")
    for name, (_, addr) in eps.items():
        print(f"  - job_name: bookmux_{name}\n    scrape_interval: 5s\n    static_configs:\n"
              f"      - targets: [\"{addr}\"]")
    return 0


def check(cfg: config.Config, seconds: float) -> int:
    eps = endpoints(cfg)
    if not eps:
        print("no service has a metrics address in the config (metrics = \"host:port\")", file=sys.stderr)
        return 2
    first = {name: scrape(addr) for name, (_, addr) in eps.items()}
    time.sleep(seconds)
    bad = 0
    for name, (kind, addr) in eps.items():
        health, _ = get(addr, "/healthz")
        ready, body = get(addr, "/readyz")
        second = scrape(addr)
        moved = []
        for metric in MOVING[kind]:
            a, b = summed(first[name], metric), summed(second, metric)
            moved.append(f"{metric.removeprefix('bookmux_')} {'+' if b > a else '='}{b - a:g}")
        reason = ""
        if ready != 200:
            try:
                reason = " (" + json.loads(body).get("reason", "") + ")"
            except ValueError:
                reason = f" ({body[:80]})"
        bad += health != 200 or ready != 200 or not second
        print(f"{name:16s} {addr:18s} healthz {health or '-'} readyz {ready or '-'}{reason}; {'; '.join(moved)}")
    return 1 if bad else 0


def supervisor_pid(conf: Path, program: str) -> int:
    """The pid of ``program`` (in deploy/supervisor.py's group ``bookmux``) under supervisord."""
    sup = Path(sys.executable).with_name("supervisorctl")
    r = subprocess.run([str(sup), "-c", str(conf), "pid", f"bookmux:{program}"], capture_output=True, text=True,
                       timeout=20)
    text = r.stdout.strip()
    if not text.isdigit() or text == "0":
        raise SystemExit(f"supervisorctl -c {conf} pid bookmux:{program}: {text or r.stderr.strip()} "
                         "(is `make demo` running?)")
    return int(text)


def venue_status(samples: dict[str, float], venue: str, symbols: list[str], status: str) -> bool:
    """Every symbol of ``venue`` has ``status`` in the aggregator's venue status metric."""
    return bool(symbols) and all(
        samples.get(f'bookmux_aggregator_venue_status{{status="{status}",symbol="{s}",venue="{venue}"}}') == 1.0
        for s in symbols)


def kill(cfg: config.Config, venue: str, shard: int, pid: int | None, conf: Path, timeout: float,
         every: float) -> int:
    agg = cfg.aggregator.metrics
    if not agg:
        print("aggregator.metrics is not set in the config", file=sys.stderr)
        return 2
    v = cfg.venue(venue)
    symbols = list(v.shard(shard).symbols)
    program = f"feed_{venue}" if len(v.processes) == 1 else f"feed_{venue}_{shard}"
    if pid is None:
        pid = supervisor_pid(conf, program)
    status, body = get(agg, "/readyz")
    if status != 200 or not venue_status(scrape(agg), venue, symbols, "live"):
        print(f"the aggregator is not ready before the kill (HTTP {status}: {body[:200]}); "
              "wait until every venue is live", file=sys.stderr)
        return 1
    print(f"kill -9 {program} (pid {pid}); symbols {', '.join(symbols)}; reading {agg} every {every * 1000:.0f} ms")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    marks: dict[str, float] = {}
    wanted = ("status down", "readyz 503", "status live", "readyz 200")
    rounds, reading = 0, 0.0
    while len(marks) < len(wanted) and time.monotonic() - t0 < timeout:
        r0 = time.monotonic()
        samples = scrape(agg)           # each mark is the time its own answer came back
        scraped = time.monotonic() - t0
        ready, _ = get(agg, "/readyz")
        answered = time.monotonic() - t0
        if "status down" not in marks and venue_status(samples, venue, symbols, "down"):
            marks["status down"] = scraped
        if "readyz 503" not in marks and ready == 503:
            marks["readyz 503"] = answered
        if "status down" in marks and "status live" not in marks and venue_status(samples, venue, symbols, "live"):
            marks["status live"] = scraped
        if "readyz 503" in marks and "readyz 200" not in marks and ready == 200:
            marks["readyz 200"] = answered
        rounds += 1
        reading += time.monotonic() - r0
        time.sleep(every)
    for what in wanted:
        took = marks.get(what)
        print(f"  aggregator {what:12s} "
              + (f"after {took:7.3f} s" if took is not None else f"not seen in {timeout:g} s"))
    print(f"  (resolution: one read of /metrics and /readyz took {reading / max(rounds, 1) * 1000:.0f} ms on "
          f"average, then {every * 1000:.0f} ms pause; down and 503: the aggregator's view of the dead feed; "
          "live and 200: supervisord restarted the feed, it resynced and the aggregator took its snapshots)")
    return 0 if len(marks) == len(wanted) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "deploy" / "demo.toml"), help="the running deployment's config "
                    "(default: %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="health, readiness and moving counters of every service")
    c.add_argument("--seconds", type=float, default=5.0, help="between the two scrapes (default: %(default)s)")
    sub.add_parser("targets", help="a Prometheus scrape_configs section for the config's processes")
    k = sub.add_parser("kill", help="kill -9 a feed; time the aggregator's status metric and readiness")
    k.add_argument("--venue", default="binance", help="venue id of the feed to kill (default: %(default)s)")
    k.add_argument("--shard", type=int, default=0, help="its feed process, when sharded (default: %(default)s)")
    k.add_argument("--pid", type=int, default=None, help="the feed's pid (default: asked from supervisorctl)")
    k.add_argument("--supervisor", default=None, help="supervisord.conf (default: <run_dir>/supervisord.conf)")
    k.add_argument("--timeout", type=float, default=90.0, help="give up after (s, default: %(default)s)")
    k.add_argument("--every", type=float, default=0.02, help="between reads of the endpoints (s, default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        return check(cfg, args.seconds)
    if args.cmd == "targets":
        return targets(cfg)
    conf = Path(args.supervisor) if args.supervisor else (REPO / cfg.run_dir / "supervisord.conf")
    return kill(cfg, args.venue, args.shard, args.pid, conf, args.timeout, args.every)


if __name__ == "__main__":
    sys.exit(main())
