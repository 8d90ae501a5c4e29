"""bookmux benchmark: ``python -m bench.run --quick`` (under 2 min) or ``--full`` (under 10 min).

Starts the real processes (simulator, feeds, aggregator, publisher) on free loopback ports and
prints ONE table, every figure beside a baseline measured in the same run, with the target and
PASS / MISS (INFO where the issue sets no target). The table and every raw figure are also
written as JSON to ``bench/results/`` (gitignored). Progress lines go to stderr.

Sections: 1 feed parse, 2 aggregator throughput, 3 end-to-end latency vs a bare relay chain,
4 saturation, 5 fan-out, 6 memory, 7 scaling (two feed processes per venue), 8 peer (cryptofeed,
a benchmark-only dependency: ``.venv/bin/pip install -e '.[bench]'``), and with ``--profile``
py-spy profiles of the aggregator and a feed under the 10x load.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.util import REPO, CpuWindow, install_cleanup, latency_summary, progress

RESULTS = REPO / "bench" / "results"


@dataclass
class Mode:
    name: str
    parse_frames: int           # generated frames per symbol and venue
    parse_passes: int
    agg_messages: int
    multiples: list[float]      # e2e / saturation ramp, x live rate
    window: float               # s of each latency window
    warm: float                 # s after start before recording
    fanout_window: float
    soak: float                 # s of the memory window at 10x
    scaling_window: float
    peer_window: float


QUICK = Mode("quick", 100, 5, 40_000, [1, 10, 30], 3.5, 1.5, 2.5, 0.0, 3.0, 4.0)
FULL = Mode("full", 300, 9, 200_000, [1, 3, 10, 20, 30], 12.0, 3.0, 8.0, 60.0, 12.0, 15.0)


@dataclass
class Row:
    section: str
    what: str
    value: str
    baseline: str
    ratio: str
    target: str
    verdict: str
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)


ROWS: list[Row] = []
RAW: dict[str, Any] = {}


def row(*args: Any, **kw: Any) -> None:
    r = Row(*args, **kw)
    ROWS.append(r)
    progress(f"ROW {r.section} {r.what}: {r.value} | base {r.baseline} | {r.ratio} | {r.target} -> {r.verdict}")


def fail(section: str, what: str, target: str, e: BaseException) -> None:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
    row(section, what, "-", "-", "-", target, "MISS", f"could not measure: {msg}")
    RAW.setdefault("errors", []).append({"section": section, "what": what, "error": msg,
                                         "trace": traceback.format_exc()[-3000:]})


def us(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v:.0f}us"


def lat_str(r: dict[str, Any]) -> str:
    if not r.get("n"):
        return "no samples"
    return f"p50 {us(r['p50_us'])} p99 {us(r['p99_us'])} p99.9 {us(r['p999_us'])} max {us(r['max_us'])}"


# --- 1 ----------------------------------------------------------------------------------------


def sec_parse(mode: Mode, work: Path) -> None:
    from bench import frames, parsebench
    from bench.pipeline import SYMBOLS

    RAW["parse"] = []
    for kind in ("binance", "bitstamp"):
        sources: list[tuple[str, Any]] = [("generated", frames.generated(kind, SYMBOLS, mode.parse_frames))]
        try:
            rec = frames.recorded(kind)
        except Exception as e:  # a damaged recording is reported, the rest goes on
            rec = None
            progress(f"  recording of {kind} unreadable: {e}")
        if rec:
            sources.append(("recorded", rec))
        else:
            row("1 parse", f"{kind} recorded", "-", "-", "-", ">= 50% of orjson", "MISS",
                "recordings not found beside the repository (../shared/fixtures/recorded)")
        for src, streams in sources:
            r = parsebench.run(kind, streams, passes=mode.parse_passes, source=src)
            RAW["parse"].append({"kind": kind, **r})
            ok = r["ratio"] >= 0.5
            row("1 parse", f"{kind} {src} ({r['frames']} frames, {r['levels_per_frame']} lv/frame)",
                f"{r['feed_frames_per_s']:,} fr/s {r['feed_levels_per_s']:,} lv/s",
                f"orjson {r['orjson_frames_per_s']:,} fr/s", f"{100 * r['ratio']:.1f}%", ">= 50% of orjson",
                "PASS" if ok else "MISS",
                f"{r['feed_us_per_frame']} us/frame vs {r['orjson_us_per_frame']} us; +{r['encode_us_per_frame']} us "
                f"to encode the bus delta", data=r)


# --- 2 ----------------------------------------------------------------------------------------


def sec_aggregator(mode: Mode, work: Path) -> None:
    from bench import aggbench
    from bench.pipeline import SYMBOLS

    RAW["aggregator"] = []
    for group, label in ((1, "real-shaped deltas"), (10, ">=10-level deltas")):
        n = mode.agg_messages if group == 1 else mode.agg_messages // 4
        try:
            r = aggbench.run(work / f"agg{group}", SYMBOLS, messages=n, group=group)
        except Exception as e:
            fail("2 aggregator", label, ">= 300k lv/s and >= 30% of bare", e)
            continue
        RAW["aggregator"].append({"group": group, **r})
        ok = r["levels_per_s"] >= 300_000 and r["ratio"] >= 0.3 and r["bus_gaps_logged"] == 0
        row("2 aggregator", f"{label} ({r['levels_per_msg']} lv/msg, {r['messages']:,} msgs)",
            f"{r['levels_per_s']:,} lv/s ({r['msgs_per_s']:,} msg/s)", f"SortedDict {r['bare_levels_per_s']:,} lv/s",
            f"{100 * r['ratio']:.1f}%", ">= 300k lv/s and >= 30% of bare", "PASS" if ok else "MISS",
            f"aggregator CPU {r['aggregator_cpu_pct']}% of a core; {r['snapshots_published']} snapshots published "
            f"(coalesced per drain round); bus gaps {r['bus_gaps_logged']}", data=r)


# --- 3-7 --------------------------------------------------------------------------------------


def _feed_bytes() -> int:
    """Mean msgpack size of a feed-bus delta (from section 1's real-shaped frames)."""
    sizes = [r["bus_delta_bytes"] for r in RAW.get("parse", []) if r.get("source") == "generated"]
    return int(sum(sizes) / len(sizes)) if sizes else 140


def _held(r: dict[str, Any]) -> bool:
    return bool(r.get("n")) and r["p99_us"] <= 10_000 and r["events_per_s"] >= 0.9 * r["nominal_events_per_s"]


STARTUP_S = 5.0   # recording seconds allowed for a pipeline to start and sync (live after ~1-2.5 s)


def rec_seconds(mode: Mode, mult: float, profile: bool) -> float:
    """How long the recording at ``mult`` must last: every connection replays it from its start, so
    the longest-lived run against it (bookmux with its extra windows, or one of the others)."""
    window = mode.warm + mode.window + 1
    bookmux = STARTUP_S + window
    if mult == 1:
        bookmux += 3 * (1.5 + mode.fanout_window)
    if mult == 10:
        bookmux += (max(10.0, mode.window) + 1.5 if profile else 0) + (mode.soak + 1 if mode.soak else 0)
        bookmux = max(bookmux, STARTUP_S + mode.warm + mode.scaling_window + 1,
                      STARTUP_S + max(4.0, mode.warm + 2.5) + mode.peer_window + 1)
    return max(bookmux, STARTUP_S + window) + 2


def sec_pipeline(mode: Mode, work: Path, profile: bool) -> None:
    from bench.pipeline import Pipeline, recording_for

    RAW["e2e"] = {}
    mem_report: dict[str, Any] | None = None
    for mult in mode.multiples:
        progress(f"pipeline at {mult:g}x live ({mult * 10:g} frames/s per symbol per venue, 20 symbols, 2 venues)")
        try:
            rec = recording_for(work, mult, rec_seconds(mode, mult, profile))
        except Exception as e:
            fail("3 e2e", f"{mult:g}x", "-", e)
            continue
        p = Pipeline(work / f"e2e_{mult:g}x", mult, recording=rec)
        entry: dict[str, Any] = {"multiple": mult}
        RAW["e2e"][f"{mult:g}x"] = entry
        try:
            p.start_sim()
            entry["live_after_s"] = round(p.start_bookmux(), 2)
            warm_from = time.monotonic()
            entry["bookmux"] = p.measure(mode.window, warm=mode.warm)
            if mult == 1:
                entry["fanout"] = {}
                for name, kw in (("10", {"sockets": 10}), ("100", {"sockets": 100, "processes": 4}),
                                 ("10+stalled", {"sockets": 10, "stall": 1})):
                    entry["fanout"][name] = p.measure(mode.fanout_window, warm=1.0, tag=f"fan{name}", **kw)
            if mult == 10:
                if profile:
                    entry["profile"] = run_profile(p, work, max(10.0, mode.window))
                if mode.soak:
                    entry["soak"] = p.measure(mode.soak, warm=0.5, tag="soak")
                assert p.mem is not None
                mem_report = p.mem.report(warm_from + mode.warm)
                entry["memory"] = mem_report
            p.stop_procs()
            p.start_bare(_feed_bytes(), int(entry["bookmux"]["mean_bytes"] or 700))
            entry["bare"] = p.measure(mode.window, warm=mode.warm)
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            progress(f"  FAILED: {entry['error']}")
            RAW.setdefault("errors", []).append({"section": f"e2e {mult:g}x", "error": entry["error"],
                                                 "trace": traceback.format_exc()[-3000:]})
        finally:
            p.close()
    # rows: 3 e2e
    for key, e in RAW["e2e"].items():
        b, z = e.get("bookmux"), e.get("bare")
        target = "p50 <= 1.5x, p99 <= 2x bare" if key == "10x" else "n/a (target at 10x)"
        if not b or not z:
            row("3 e2e", f"{key}", "-", "-", "-", target, "MISS", f"could not measure: {e.get('error')}")
            continue
        r50 = b["p50_us"] / z["p50_us"] if z.get("p50_us") else float("nan")
        r99 = b["p99_us"] / z["p99_us"] if z.get("p99_us") else float("nan")
        verdict = ("PASS" if r50 <= 1.5 and r99 <= 2 else "MISS") if key == "10x" else "INFO"
        row("3 e2e", f"{key}: {b['events_per_s']:.0f} of {b['nominal_events_per_s']:.0f} ev/s delivered",
            lat_str(b), f"bare p50 {us(z['p50_us'])} p99 {us(z['p99_us'])}", f"p50 {r50:.2f}x p99 {r99:.2f}x",
            target, verdict,
            f"{b['snapshots_per_s']:.0f} snapshots/s ({b['mean_bytes']:.0f} B), bare {z['snapshots_per_s']:.0f}/s; "
            f"CPU % {_cpu_str(b['cpu'])}", data={"bookmux": b, "bare": z})
    # 4 saturation
    tested = [(e["multiple"], e["bookmux"]) for e in RAW["e2e"].values() if e.get("bookmux")]
    if tested:
        first_bad = next(((m, r) for m, r in tested if not _held(r)), None)
        below30 = [m for m, r in tested if m < 30 and not _held(r)]
        at30 = next((r for m, r in tested if m == 30), None)
        ok = not below30 and at30 is not None and _held(at30)
        if first_bad is None:
            value = f"held every rate tested up to {tested[-1][0]:g}x"
            top = tested[-1][1]
        else:
            m, top = first_bad
            why = ("p99 " + us(top["p99_us"]) if top["p99_us"] > 10_000 else "") + (
                f" delivered {top['events_per_s']:.0f}/{top['nominal_events_per_s']:.0f} ev/s"
                if top["events_per_s"] < 0.9 * top["nominal_events_per_s"] else "")
            value = f"saturates at {m:g}x ({why.strip()})"
        cpu = top["cpu"]
        busiest = max((k for k in cpu if not k.startswith("_") and k != "bench_runner"), key=lambda k: cpu[k])
        row("4 saturation", "ramp " + ", ".join(f"{m:g}x" for m, _ in tested), value,
            f"machine {cpu['_machine']:.0f}% of 200%", "-", "no saturation below 30x", "PASS" if ok else "MISS",
            f"busiest: {busiest} {cpu[busiest]:.0f}%; simulator {cpu.get('simulator', 0):.0f}%; other load "
            f"{cpu.get('_other', 0):.0f}%; CPU % {_cpu_str(cpu)}",
            data={"ramp": {f"{m:g}x": {"p99_us": r["p99_us"], "events_per_s": r["events_per_s"], "cpu": r["cpu"]}
                           for m, r in tested}})
    # 5 fan-out
    one = RAW["e2e"].get("1x", {})
    fan = one.get("fanout")
    if one.get("bookmux") and fan:
        base = one["bookmux"]
        for name, r in [("1", base), *fan.items()]:
            ratio = r["p99_us"] / base["p99_us"] if base.get("p99_us") else float("nan")
            if name == "10+stalled":
                ok = r["p99_us"] <= 2 * fan["10"]["p99_us"] and r.get("min_socket_count", 0) > 0
                tgt = "p99 <= 2x the 10-socket p99"
                extra = f"vs 10 sockets {us(fan['10']['p99_us'])}"
            else:
                ok = r["p99_us"] <= 10_000 and r.get("min_socket_count", 0) > 0
                tgt = "p99 <= 10ms, every socket served"
                extra = ""
            row("5 fan-out", f"1x, {name} socket(s)", lat_str(r), f"1 socket p99 {us(base['p99_us'])} {extra}",
                f"{ratio:.2f}x", tgt, "PASS" if ok else "MISS",
                f"{r['n']} snapshots decoded, fewest on one socket {r.get('min_socket_count')}; publisher CPU "
                f"{r['cpu'].get('publisher', 0):.0f}%, subscribers "
                f"{sum(v for k, v in r['cpu'].items() if k.startswith('sub_')):.0f}%", data=r)
    else:
        row("5 fan-out", "1x", "-", "-", "-", "p99 <= 10ms", "MISS", f"could not measure: {one.get('error')}")
    # 6 memory
    if mem_report:
        for name, m in mem_report.items():
            g = m["growth_pct_per_min"]
            is_ours = name != "simulator"
            ok = g is not None and g <= 1.0
            row("6 memory", f"{name} (10x, {m['span_s']:.0f}s warm)", f"peak {m['peak_mib']} MiB", "-",
                f"{g if g is not None else '-'} %/min", "<= 1%/min once warm" if is_ours else "n/a (load generator)",
                ("PASS" if ok else "MISS") if is_ours else "INFO",
                "" if g is not None else "window too short for a slope (quick mode); run make bench", data=m)
    else:
        row("6 memory", "10x", "-", "-", "-", "<= 1%/min", "MISS", "the 10x run did not complete")


def _cpu_str(cpu: dict[str, float]) -> str:
    short = {"feed_binance": "fbin", "feed_bitstamp": "fbts", "feed_binance_0": "fbin0", "feed_binance_1": "fbin1",
             "feed_bitstamp_0": "fbts0", "feed_bitstamp_1": "fbts1", "aggregator": "agg", "publisher": "pub",
             "simulator": "sim",
             "_machine": "machine", "_other": "other"}
    parts = []
    subs = 0.0
    for k, v in cpu.items():
        if k.startswith("sub_"):
            subs += v
        elif k != "bench_runner" and k != "peer":
            parts.append(f"{short.get(k, k)} {v:.0f}")
    if subs:
        parts.append(f"subs {subs:.0f}")
    return ", ".join(parts)


def sec_scaling(mode: Mode, work: Path, profile: bool) -> None:
    from bench.pipeline import Pipeline, recording_for

    mult = 10
    single = RAW.get("e2e", {}).get(f"{mult}x", {}).get("bookmux")
    try:
        p = Pipeline(work / "scaling", mult, split=True, recording=recording_for(work, mult, rec_seconds(mode, mult,
                                                                                                          profile)))
    except Exception as e:
        fail("7 scaling", f"{mult}x", "n/a", e)
        return
    try:
        p.start_sim()
        p.start_bookmux()
        r = p.measure(mode.scaling_window, warm=mode.warm, tag="split")
    except Exception as e:
        fail("7 scaling", f"{mult}x, 2 feed processes per venue", "n/a", e)
        return
    finally:
        p.close()
    RAW["scaling"] = {"split": r, "single": single}
    cpu = r["cpu"]
    feeds = sum(v for k, v in cpu.items() if k.startswith("feed_"))
    agg = cpu.get("aggregator", 0)
    ours = feeds + agg + cpu.get("publisher", 0)
    base = f"1 feed/venue: p50 {us(single['p50_us'])} p99 {us(single['p99_us'])}" if single else "-"
    ratio = f"p99 {r['p99_us'] / single['p99_us']:.2f}x" if single and single.get("p99_us") else "-"
    row("7 scaling", f"{mult}x, 2 feed processes per venue (shards of one venue id)", lat_str(r), base, ratio,
        "n/a (where is the next bottleneck)", "INFO",
        f"aggregator {agg:.0f}% = {100 * agg / ours if ours else 0:.0f}% of bookmux CPU; feeds {feeds:.0f}% in 4 "
        f"processes; {r['events_per_s']:.0f}/{r['nominal_events_per_s']:.0f} ev/s; CPU % {_cpu_str(cpu)}", data=r)


# --- 8 ----------------------------------------------------------------------------------------


def sec_peer(mode: Mode, work: Path, profile: bool) -> None:
    from bench.pipeline import SYMBOLS, Pipeline, recording_for

    try:
        import cryptofeed  # noqa: F401
    except ImportError:
        row("8 peer", "cryptofeed", "-", "-", "-", "n/a (say where it is ahead)", "MISS",
            "cryptofeed is not installed: .venv/bin/pip install -e '.[bench]' (benchmark-only extra)")
        return
    mult = 10
    try:
        p = Pipeline(work / "peer", mult, recording=recording_for(work, mult, rec_seconds(mode, mult, profile)))
    except Exception as e:
        fail("8 peer", "cryptofeed", "n/a", e)
        return
    try:
        p.start_sim()
        start = time.time() + max(4.0, mode.warm + 2.5)   # it fetches snapshots lazily: give it time
        stop = start + mode.peer_window
        out = p.dir / "peer.lat"
        p.procs.module("peer", "bench.peer", "--binance", f"ws://127.0.0.1:{p.bin_port}",
                       "--binance-rest", f"http://127.0.0.1:{p.bin_port}", "--bitstamp", f"ws://127.0.0.1:{p.bts_port}",
                       "--bitstamp-rest", f"http://127.0.0.1:{p.bts_port}", "--symbols", ",".join(SYMBOLS),
                       "--start", repr(start), "--stop", repr(stop), "--out", str(out))
        while time.time() < start:
            time.sleep(0.05)
        cpu = CpuWindow(p.procs.pids() | p.sim.pids())
        s0 = p.events_sent()
        cpu.start()
        t0 = time.monotonic()
        while time.time() < stop:
            time.sleep(0.05)
        load = cpu.stop()
        dt = time.monotonic() - t0
        sent = sum(p.events_sent().values()) - sum(s0.values())
        deadline = time.monotonic() + 10
        while not Path(str(out) + ".json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        lat = array.array("q")
        lat.frombytes(out.read_bytes())
        counts = json.loads(Path(str(out) + ".json").read_text())
        log = p.procs.log("peer")
    except Exception as e:
        fail("8 peer", "cryptofeed", "n/a", e)
        return
    finally:
        p.close()
    r = latency_summary(lat)
    per_s = counts["binance"] / dt + counts["bitstamp"] / dt
    ours = RAW.get("e2e", {}).get(f"{mult}x", {}).get("bookmux")
    peer_us_frame = 1e4 * load.get("peer", 0) / max(1.0, sent / dt)
    r.update(cpu=load, callbacks_per_s=round(per_s, 1), events_per_s=round(sent / dt, 1),
             cpu_us_per_frame=round(peer_us_frame, 1), counts=counts)
    RAW["peer"] = r
    if not r.get("n"):
        row("8 peer", f"cryptofeed {mult}x", "-", "-", "-", "n/a", "MISS",
            f"no callbacks recorded; log tail: {log[-300:]!r}")
        return
    base = "-"
    note = ""
    if ours:
        feeds_cpu = ours["cpu"].get("feed_binance", 0) + ours["cpu"].get("feed_bitstamp", 0)
        ours_us_frame = 1e4 * feeds_cpu / max(1.0, ours["events_per_s"])
        base = f"bookmux frame->subscriber p50 {us(ours['p50_us'])} p99 {us(ours['p99_us'])}"
        note = (f"CPU per frame: cryptofeed {peer_us_frame:.0f} us (1 process, 2 venues, in-process callback) vs "
                f"bookmux feeds {ours_us_frame:.0f} us (parse+sync+apply+publish) + aggregator/publisher; "
                f"cryptofeed {r['callbacks_per_s']:.0f} callbacks/s at {r['events_per_s']:.0f} ev/s delivered")
        r["bookmux_feed_cpu_us_per_frame"] = round(ours_us_frame, 1)
    row("8 peer", f"cryptofeed {mult}x frame->callback (one hop fewer: no bus, no merge)", lat_str(r), base, "-",
        "n/a (say honestly where it is ahead)", "INFO", note, data=r)


# --- profile ----------------------------------------------------------------------------------


def run_profile(p: Any, work: Path, seconds: float) -> dict[str, Any]:
    """py-spy (sampling, attaches by pid, no code change) on the aggregator and the Binance feed for
    ``seconds`` under the current load; raw collapsed stacks saved, top self-time frames returned."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        progress("  py-spy not installed (.venv/bin/pip install -e '.[bench]'): no profile")
        return {"error": "py-spy not installed"}
    out: dict[str, Any] = {}
    procs = []
    pids = p.procs.pids()
    for name in ("aggregator", "feed_binance", "publisher"):
        f = work / f"profile_{name}.txt"
        cmd = [spy, "record", "--pid", str(pids[name]), "--duration", str(int(seconds)), "--rate", "200",
               "--format", "raw", "--nonblocking", "--output", str(f)]
        procs.append((name, f, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    progress(f"  profiling aggregator, feed_binance, publisher with py-spy for {seconds:.0f} s")
    win = p.measure(seconds, warm=0.3, tag="profiled")
    for name, f, sp in procs:
        try:
            _, err = sp.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            sp.kill()
            err = b"timeout"
        if not f.exists():
            out[name] = {"error": err.decode(errors="replace")[-300:]}
            continue
        out[name] = {"file": str(f), **top_frames(f)}
    out["window"] = win
    return out


def top_frames(path: Path, n: int = 12) -> dict[str, Any]:
    """Self time (leaf frame) and inclusive time per function from py-spy's collapsed stacks."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not cnt.isdigit():
            continue
        c = int(cnt)
        frames = stack.split(";")
        leaf = frames[-1]
        total += c
        if any(k in leaf for k in ("poll (zmq", "select (", "epoll", "_run_once (asyncio", "run (uvloop",
                                   "sleep (", "wait (threading", "_worker (concurrent")):
            idle += c
            continue
        self_t[leaf] = self_t.get(leaf, 0) + c
        for fr in set(frames):
            incl[fr] = incl.get(fr, 0) + c
    busy = max(1, total - idle)

    def top(d: dict[str, int]) -> list[list[Any]]:
        return [[k, round(100 * v / busy, 1)] for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]
    return {"samples": total, "idle_samples": idle, "self_pct_of_busy": top(self_t),
            "inclusive_pct_of_busy": top({k: v for k, v in incl.items() if "<module>" not in k
                                          and "_run_module" not in k and "_run_code" not in k})}


# --- output -----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    cols = ["section", "what", "value", "baseline (same run)", "ratio", "target", "verdict"]
    data = [[r.section, r.what, r.value, r.baseline, r.ratio, r.target, r.verdict] for r in rows]
    widths = [min(70, max(len(c), *(len(d[i]) for d in data))) if data else len(c) for i, c in enumerate(cols)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    lines = [fmt(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(d) for d in data]
    notes = [f"- {r.section} {r.what}: {r.note}" for r in rows if r.note]
    return "\n".join(lines) + ("\n\nNotes:\n" + "\n".join(notes) if notes else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="under 2 minutes (the default)")
    g.add_argument("--full", action="store_true", help="under 10 minutes, longer windows, finer ramp")
    ap.add_argument("--only", default="", help="comma-separated sections to run: parse,agg,e2e,scaling,peer")
    ap.add_argument("--profile", action="store_true", help="py-spy the aggregator and a feed under the 10x load")
    a = ap.parse_args(argv)
    mode = FULL if a.full else QUICK
    only = {s for s in a.only.split(",") if s} or {"parse", "agg", "e2e", "scaling", "peer"}
    install_cleanup()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = RESULTS / f"{stamp}-{mode.name}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    progress(f"bookmux bench ({mode.name}): results in {work}")
    RAW["meta"] = {"mode": mode.name, "started": stamp, "python": platform.python_version(),
                   "cpus": os.cpu_count(), "machine": platform.machine(), "git": _git_rev()}
    interrupted = False
    try:
        for name, fn in (("parse", sec_parse), ("agg", sec_aggregator)):
            if name in only:
                progress(f"section {name}")
                try:
                    fn(mode, work)
                except Exception as e:
                    fail(name, "all", "-", e)
        if "e2e" in only:
            progress("sections 3-6: end-to-end, saturation, fan-out, memory")
            sec_pipeline(mode, work, a.profile)
        if "scaling" in only:
            progress("section 7: scaling")
            sec_scaling(mode, work, a.profile)
        if "peer" in only:
            progress("section 8: peer")
            sec_peer(mode, work, a.profile)
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: stopping every process")
    finally:
        from bench.util import Procs
        Procs.close_all()
    RAW["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    RAW["rows"] = [r.__dict__ for r in ROWS]
    text = table(ROWS)
    header = (f"bookmux bench --{mode.name}: {RAW['meta']['seconds']} s, {os.cpu_count()} cores, "
              f"git {RAW['meta']['git']}{' (INTERRUPTED)' if interrupted else ''}")
    print(header)
    print(text)
    (work / "results.json").write_text(json.dumps(RAW, indent=1, default=str))
    (work / "table.md").write_text(header + "\n\n" + text + "\n")
    latest = RESULTS / f"latest-{mode.name}.json"
    latest.write_text(json.dumps(RAW, indent=1, default=str))
    progress(f"wrote {work / 'results.json'} and {latest}")
    return 130 if interrupted else 0


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
