"""Reliability measurements that are scripts, not tests (their figures go into the README):

  python -m bench.reliability recovery [--rounds 3]
      the whole demo under supervisord on free loopback ports; `kill -9` of every program in turn
      (feeds, aggregator, publisher, simulator); how long until a plain subscriber (never
      reconnected by hand) again receives a full book with every venue live.

  python -m bench.reliability soak [--minutes 30] [--rate 100] [--symbols 6]
      the simulator at 10x live rates (live ~ 10 depth events/s per symbol per venue), all venues,
      for a long time: RSS of every process and end-to-end latency (subscriber receive time minus
      the snapshot's ``ts``, the feed's receive time of its newest input) sampled every minute;
      prints a line per minute and a summary with each process's RSS growth per minute once warm.

Both write JSON under bench/results/ and clean up every process on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from common.ports import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
VENUES = ("binance", "bitstamp")
PROGRAMS = ("simulator", "feed_binance", "feed_bitstamp", "aggregator", "publisher")


def write_config(run: Path, symbols: list[str], rate: float, stale_after: float = 5.0) -> tuple[Path, int, int]:
    """A demo config on free ports; returns (path, publisher port, simulator control port)."""
    p = {k: free_port() for k in ("pub", "apub", "actl", "query", "bpub", "bctl", "spub", "sctl", "bin", "bts",
                                  "ctl")}
    sym_list = ", ".join(f'"{s}"' for s in symbols)
    text = f"""
symbols = [{sym_list}]
levels = 10
log_level = "INFO"
run_dir = "{run}"

[aggregator]
pub = "tcp://127.0.0.1:{p['apub']}"
ctl = "tcp://127.0.0.1:{p['actl']}"
query = "tcp://127.0.0.1:{p['query']}"
down_after = 2.0

[publisher]
bind = "127.0.0.1"
port = {p['pub']}
sndhwm = 1000

[venues.binance]
kind = "binance"
ws_url = "ws://127.0.0.1:{p['bin']}"
rest_url = "http://127.0.0.1:{p['bin']}"
pub = "tcp://127.0.0.1:{p['bpub']}"
ctl = "tcp://127.0.0.1:{p['bctl']}"
stale_after = {stale_after}

[venues.bitstamp]
kind = "bitstamp"
ws_url = "ws://127.0.0.1:{p['bts']}"
rest_url = "http://127.0.0.1:{p['bts']}/api/v2"
pub = "tcp://127.0.0.1:{p['spub']}"
ctl = "tcp://127.0.0.1:{p['sctl']}"
stale_after = {stale_after}

[simulator]
host = "127.0.0.1"
control_port = {p['ctl']}
seed = 3
rate = {rate}

[simulator.venues.binance]
kind = "binance"
port = {p['bin']}

[simulator.venues.bitstamp]
kind = "bitstamp"
port = {p['bts']}
"""
    path = run / "bookmux.toml"
    path.write_text(text)
    return path, p["pub"], p["ctl"]


class Supervisor:
    """supervisord running the generated demo configuration in the background."""

    def __init__(self, cfg: Path, run: Path) -> None:
        self.run = run
        conf = subprocess.run([sys.executable, "-m", "deploy.supervisor", "--config", str(cfg), "--demo"],
                              cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
        self.conf = conf
        bin_dir = Path(sys.executable).parent
        self.ctl_cmd = [str(bin_dir / "supervisorctl"), "-c", conf]
        self.proc = subprocess.Popen([str(bin_dir / "supervisord"), "-n", "-c", conf], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def pid(self, program: str) -> int:
        out = subprocess.run([*self.ctl_cmd, "pid", f"bookmux:{program}"], capture_output=True, text=True).stdout
        return int(out.strip() or 0)

    def stop(self) -> None:
        subprocess.run([*self.ctl_cmd, "shutdown"], capture_output=True)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


class Sub:
    """A plain subscriber: last snapshot per symbol, latency samples."""

    def __init__(self, port: int, symbols: list[str]) -> None:
        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.SUB)
        self.s.setsockopt(zmq.LINGER, 0)
        for sym in symbols:
            self.s.setsockopt(zmq.SUBSCRIBE, f"book.{sym}".encode())
        self.s.connect(f"tcp://127.0.0.1:{port}")
        self.last: dict[str, dict[str, Any]] = {}
        self.last_at: dict[str, float] = {}
        self.lat_us: list[float] = []

    def pump(self, timeout_ms: int = 50) -> None:
        while self.s.poll(timeout_ms):
            _topic, payload = self.s.recv_multipart()
            now = time.time_ns()
            m = msgpack.unpackb(payload)
            self.last[m["symbol"]] = m
            self.last_at[m["symbol"]] = time.monotonic()
            if m["ts"]:
                self.lat_us.append((now - m["ts"]) / 1000)
            timeout_ms = 0

    def all_live(self, symbols: list[str], epoch_not: int | None = None) -> bool:
        for sym in symbols:
            m = self.last.get(sym)
            if m is None or set(m["venues"].values()) != {"live"} or not m["bids"] or not m["asks"]:
                return False
            if epoch_not is not None and m["epoch"] == epoch_not:
                return False
        return True

    def close(self) -> None:
        self.s.close(0)
        self.ctx.term()


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait(pred: Any, sub: Sub, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        sub.pump(20)
        if pred():
            return time.monotonic() - t0
    return None


def recovery(args: argparse.Namespace) -> dict[str, Any]:
    symbols = ["BTC/USDT", "ETH/USDT"]
    results: dict[str, list[float | None]] = {p: [] for p in PROGRAMS}
    with tempfile.TemporaryDirectory(prefix="bookmux-recovery-") as tmp:
        run = Path(tmp)
        cfg, port, _ = write_config(run, symbols, rate=10.0)
        sup = Supervisor(cfg, run)
        sub = Sub(port, symbols)
        try:
            t = wait(lambda: sub.all_live(symbols), sub, 60)
            print(f"start-up: every venue live after {t if t is None else round(t, 2)} s", flush=True)
            for rnd in range(args.rounds):
                for prog in PROGRAMS:
                    wait(lambda: sub.all_live(symbols), sub, 60)
                    pid = sup.pid(prog)
                    epoch = sub.last[symbols[0]]["epoch"]
                    os.kill(pid, signal.SIGKILL)
                    t0 = time.monotonic()
                    # Back = a snapshot received after the kill for every symbol, every venue live
                    # and full; for a feed, after its venue was seen leaving live; for the
                    # aggregator, in a new epoch.
                    new_epoch = epoch if prog == "aggregator" else None
                    seen_down = not prog.startswith("feed_")

                    up_at = [0.0]     # when supervisord had the new process running

                    def back(new_epoch: int | None = new_epoch, prog: str = prog, pid: int = pid,
                             up_at: list[float] = up_at) -> bool:
                        nonlocal seen_down
                        if not up_at[0]:
                            if sup.pid(prog) not in (0, pid):
                                up_at[0] = time.monotonic()
                            return False
                        if not seen_down:
                            seen_down = any(set(m["venues"].values()) != {"live"} for m in sub.last.values())
                            return False
                        return (all(sub.last_at.get(s, 0) > up_at[0] for s in symbols)
                                and sub.all_live(symbols, epoch_not=new_epoch))
                    took = wait(back, sub, 30)
                    took = None if took is None else time.monotonic() - t0
                    results[prog].append(took)
                    print(f"round {rnd + 1}: kill -9 {prog:13s} -> full live books again after "
                          f"{'TIMEOUT' if took is None else f'{took:.2f} s'}", flush=True)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sub.close()
            sup.stop()
    summary = {p: {"max_s": max((x for x in v if x is not None), default=None),
                   "median_s": statistics.median([x for x in v if x is not None]) if any(v) else None,
                   "timeouts": sum(x is None for x in v)} for p, v in results.items()}
    print(json.dumps(summary, indent=2))
    return {"kind": "recovery", "rounds": args.rounds, "results": results, "summary": summary}


def soak(args: argparse.Namespace) -> dict[str, Any]:
    symbols = [f"{b}/USDT" for b in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "BNB", "DOT", "LINK")]
    symbols = symbols[: args.symbols]
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bookmux-soak-") as tmp:
        run = Path(tmp)
        cfg, port, _ = write_config(run, symbols, rate=args.rate)
        sup = Supervisor(cfg, run)
        sub = Sub(port, symbols)
        stop = threading.Event()
        try:
            t = wait(lambda: sub.all_live(symbols), sub, 120)
            print(f"soak: {len(symbols)} symbols x 2 venues at {args.rate}/s each; live after {t} s; "
                  f"{args.minutes} min", flush=True)
            pids = {p: sup.pid(p) for p in PROGRAMS}
            # Start-up books (snapshots, books republished for a joining subscriber) carry the time
            # of inputs read seconds ago: their age is not pipeline latency. Count from here.
            sub.lat_us = []
            # The subscriber reads in its own thread: the sampling below (supervisorctl, sorting)
            # must not leave snapshots queued in our socket and count as pipeline latency.
            reader = threading.Thread(target=lambda: [sub.pump(200) for _ in iter(stop.is_set, True)], daemon=True)
            reader.start()
            end = time.monotonic() + args.minutes * 60
            next_sample = time.monotonic() + 60
            while time.monotonic() < end:
                time.sleep(max(0.0, min(next_sample, end) - time.monotonic()))
                if time.monotonic() < next_sample:
                    continue
                next_sample += 60
                lat, sub.lat_us = sub.lat_us, []
                lat.sort()
                row = {"minute": len(samples) + 1, "snapshots": len(lat),
                       "p50_us": lat[len(lat) // 2] if lat else None,
                       "p99_us": lat[int(len(lat) * 0.99)] if lat else None,
                       "max_us": lat[-1] if lat else None,
                       "rss_kb": {p: rss_kb(pid) for p, pid in pids.items()},
                       "restarts": {p: int(sup.pid(p) != pid) for p, pid in pids.items()}}
                samples.append(row)
                print(f"min {row['minute']:3d}: {row['snapshots']:7d} snapshots, p50 {row['p50_us']:.0f} us, "
                      f"p99 {row['p99_us']:.0f} us, max {row['max_us']:.0f} us; RSS MB "
                      + " ".join(f"{p}={v / 1024:.1f}" for p, v in row["rss_kb"].items())
                      + (f"; restarted {[p for p, r in row['restarts'].items() if r]}"
                         if any(row["restarts"].values()) else ""), flush=True)
        finally:
            # A second Ctrl-C must not leave the pipeline running: ignore it while stopping.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop.set()
            time.sleep(0.3)
            sub.close()
            sup.stop()
    growth: dict[str, float | None] = {}
    warm = samples[len(samples) // 3:] if len(samples) >= 3 else samples
    for p in PROGRAMS:
        ys = [s["rss_kb"][p] for s in warm]
        if len(ys) >= 2 and ys[0]:
            xs = list(range(len(ys)))
            slope = statistics.linear_regression(xs, ys).slope
            growth[p] = round(100 * slope / ys[0], 3)
        else:
            growth[p] = None
    print("RSS growth per minute once warm (% of the warm RSS): " + json.dumps(growth))
    return {"kind": "soak", "minutes": args.minutes, "rate": args.rate, "symbols": symbols, "samples": samples,
            "growth_pct_per_min": growth}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recovery", help="kill -9 each program under supervisord, time the recovery")
    r.add_argument("--rounds", type=int, default=3)
    s = sub.add_parser("soak", help="long run at 10x live rates: memory and latency over time")
    s.add_argument("--minutes", type=float, default=30)
    s.add_argument("--rate", type=float, default=100.0, help="events/s per symbol per venue (live ~ 10)")
    s.add_argument("--symbols", type=int, default=6)
    args = ap.parse_args(argv)
    # SIGTERM (e.g. a time-out) unwinds like Ctrl-C, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = recovery(args) if args.cmd == "recovery" else soak(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.cmd}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
