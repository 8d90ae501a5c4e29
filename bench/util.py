"""Benchmark plumbing: free loopback ports, config files, child processes that are always cleaned
up, /proc CPU and memory sampling, percentiles and progress lines. Nothing here measures."""

from __future__ import annotations

import atexit
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from common.ports import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RECORDED = SHARED / "fixtures" / "recorded"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_T0 = time.monotonic()


def progress(msg: str) -> None:
    """One progress line with the elapsed time (stderr, so the table on stdout stays clean)."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def tcp() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


# --- config -----------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_config(path: Path, *, symbols: Sequence[str], venues: dict[str, dict[str, Any]],
                 levels: int = 10, depletion: dict[str, list[str]] | None = None,
                 simulator: dict[str, Any] | None = None, sim_venues: dict[str, dict[str, Any]] | None = None,
                 down_after: float = 3.0, sndhwm: int = 1000, log_level: str = "INFO", metrics: bool = False,
                 agg_shards: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """A bookmux TOML config on fresh loopback ports. ``venues`` maps a venue id to its table
    (``kind``, ``ws_url``, ``rest_url``, optional ``symbols``...); ``pub``/``ctl`` are filled in.
    ``metrics``: every process gets a ``metrics`` endpoint, as deploy/bookmux.toml ships.
    ``agg_shards``: the symbols of each ``[[aggregator.shards]]`` (none: one aggregator).
    Returns the endpoints: ``agg_pub``, ``agg_ctl``, ``query``, ``pub_port``, ``publisher``,
    ``metrics`` ({process name: host:port}), ``shards`` and, per venue id, its table."""
    ep: dict[str, Any] = {"agg_pub": tcp(), "agg_ctl": tcp(), "query": tcp(), "pub_port": free_port(),
                          "metrics": {}, "shards": []}
    ep["publisher"] = f"tcp://127.0.0.1:{ep['pub_port']}"

    def met(name: str) -> list[str]:
        if not metrics:
            return []
        ep["metrics"][name] = f"127.0.0.1:{free_port()}"
        return [f'metrics = "{ep["metrics"][name]}"']
    out = [f"symbols = {_toml_value(list(symbols))}", f"levels = {levels}", f'log_level = "{log_level}"',
           f"run_dir = {_toml_value(str(path.parent))}", "max_msg_size = 67108864", "",
           "[aggregator]", f'pub = "{ep["agg_pub"]}"', f'ctl = "{ep["agg_ctl"]}"', f'query = "{ep["query"]}"',
           f"down_after = {float(down_after)}", *([] if agg_shards else met("aggregator")), ""]
    if depletion:
        out.append("[aggregator.depletion]")
        out += [f'"{s}" = {_toml_value(sizes)}' for s, sizes in depletion.items()]
        out.append("")
    for i, syms in enumerate(agg_shards):
        sh = {"symbols": list(syms), "pub": tcp(), "ctl": tcp(), "query": tcp()}
        ep["shards"].append(sh)
        out += ["[[aggregator.shards]]", *(f"{k} = {_toml_value(v)}" for k, v in sh.items()),
                *met(f"aggregator_{i}"), ""]
    out += ["[publisher]", 'bind = "127.0.0.1"', f"port = {ep['pub_port']}", f"sndhwm = {sndhwm}",
            *met("publisher"), ""]
    for vid, table in venues.items():
        t = {"pub": tcp(), "ctl": tcp(), **table}
        if metrics and "shards" not in t:
            t["metrics"] = f"127.0.0.1:{free_port()}"
            ep["metrics"][f"feed_{vid}"] = t["metrics"]
        ep[vid] = t
        out.append(f"[venues.{vid}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in t.items() if k != "dust"]
        out += ["", f"[venues.{vid}.dust]", '"*" = { min_amount = "0.00001", min_notional = "1" }', ""]
    if simulator is not None:
        out.append("[simulator]")
        out += [f"{k} = {_toml_value(v)}" for k, v in simulator.items()]
        out.append("")
        for vid, table in (sim_venues or {}).items():
            out.append(f"[simulator.venues.{vid}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
            out.append("")
    path.write_text("\n".join(out) + "\n")
    return ep


# --- processes --------------------------------------------------------------------------------


class Procs:
    """Child processes of one benchmark phase, each in its own session (so a terminal Ctrl-C
    reaches only the runner, which then stops them). :meth:`close` always stops every one."""

    _all: ClassVar[list[Procs]] = []

    def __init__(self, logdir: Path, root: Path = REPO) -> None:
        self.logdir = logdir
        self.root = root     # the source tree the services run from (cwd and PYTHONPATH)
        logdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        Procs._all.append(self)

    def start(self, name: str, argv: Sequence[str], *, python: bool = True) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, *argv] if python else list(argv)
        with open(self.logdir / f"{name}.log", "ab") as log:
            env = dict(os.environ)
            if self.root != REPO:
                env["PYTHONPATH"] = str(self.root)
            p = subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env)
        self.procs[name] = p
        return p

    def module(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, ["-m", module, *args])

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.returncode})" for n, p in self.procs.items() if p.poll() is not None]

    def log(self, name: str) -> str:
        try:
            return (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, name: str, timeout: float = 5.0) -> None:
        p = self.procs.pop(name, None)
        if p is not None:
            _terminate(p, timeout)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(p)
        self.procs.clear()
        if self in Procs._all:
            Procs._all.remove(self)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def close_all(cls) -> None:
        for p in list(cls._all):
            p.close()


def _kill(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _terminate(p: subprocess.Popen[bytes], timeout: float) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        _kill(p)


def install_cleanup() -> None:
    """Stop every child on exit, Ctrl-C or SIGTERM (the handlers raise so ``finally`` runs)."""
    atexit.register(Procs.close_all)

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# --- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads), seconds; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB; None if gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None
    return rss, hwm


def total_cpu_seconds() -> float:
    """Busy seconds of the whole machine (all cores) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK_TCK


class CpuWindow:
    """CPU use of named processes over a window: ``start()`` then ``stop()`` -> % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.t0 = 0.0
        self.c0: dict[str, float | None] = {}
        self.m0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.m0 = total_cpu_seconds()

    def stop(self) -> dict[str, float]:
        return self.stop_seconds()[0]

    def stop_seconds(self) -> tuple[dict[str, float], dict[str, float]]:
        """(% of one core per process plus ``_machine`` / ``_other``, CPU seconds per process)."""
        dt = time.monotonic() - self.t0
        out: dict[str, float] = {}
        secs: dict[str, float] = {}
        for n, p in self.pids.items():
            c1, c0 = cpu_seconds(p), self.c0.get(n)
            if c1 is not None and c0 is not None:
                out[n] = round(100 * (c1 - c0) / dt, 1)
                secs[n] = c1 - c0
        machine = 100 * (total_cpu_seconds() - self.m0) / dt
        out["_machine"] = round(machine, 1)
        out["_other"] = round(max(0.0, machine - sum(v for k, v in out.items() if not k.startswith("_"))), 1)
        return out, secs


class MemSampler:
    """RSS of named processes sampled by :meth:`sample` (call it from wait loops)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.samples: dict[str, list[tuple[float, int]]] = {n: [] for n in pids}
        self.hwm: dict[str, int] = {}
        self._next = 0.0

    def sample(self, every: float = 1.0) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + every
        for n, p in self.pids.items():
            m = mem_kb(p)
            if m is not None:
                self.samples[n].append((now, m[0]))
                self.hwm[n] = max(self.hwm.get(n, 0), m[1])

    def report(self, warm_from: float) -> dict[str, dict[str, float]]:
        """Per process: peak RSS (MiB, VmHWM) and the RSS growth in % per minute after
        ``warm_from`` (least-squares slope over the samples, relative to their mean)."""
        out = {}
        for n, s in self.samples.items():
            pts = [(t, r) for t, r in s if t >= warm_from]
            slope = None
            if len(pts) >= 5 and pts[-1][0] - pts[0][0] >= 5:
                mt = sum(t for t, _ in pts) / len(pts)
                mr = sum(r for _, r in pts) / len(pts)
                den = sum((t - mt) ** 2 for t, _ in pts)
                slope = sum((t - mt) * (r - mr) for t, r in pts) / den if den else 0.0
                slope = 100 * slope * 60 / mr if mr else 0.0
            out[n] = {"peak_mib": round(self.hwm.get(n, 0) / 1024, 1),
                      "growth_pct_per_min": None if slope is None else round(slope, 2),
                      "span_s": round(pts[-1][0] - pts[0][0], 1) if pts else 0.0}
        return out


# --- statistics -------------------------------------------------------------------------------


def pct(sorted_vals: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))
    return float(sorted_vals[i])


def latency_summary(ns: Iterable[int]) -> dict[str, Any]:
    v = sorted(ns)
    if not v:
        return {"n": 0}
    us = 1e-3
    return {"n": len(v), "p50_us": round(pct(v, 0.5) * us, 1), "p99_us": round(pct(v, 0.99) * us, 1),
            "p999_us": round(pct(v, 0.999) * us, 1), "max_us": round(v[-1] * us, 1)}


def wait_until(pred: Callable[[], bool], timeout: float, *, pump: Callable[[], None] = lambda: None,
               what: str = "condition", step: float = 0.05) -> float:
    t0 = time.monotonic()
    while True:
        pump()
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
