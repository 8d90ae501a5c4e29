"""bookmux benchmark: ``python -m bench.run --quick`` (~3 min) or ``--full`` (~15 min).

Starts the real processes (simulator, feeds, aggregator(s), publisher) on free loopback ports and
prints ONE table, every figure beside a baseline measured in the same run, with the target and
PASS / MISS (INFO where the issue sets no target). The table and every raw figure are also
written as JSON to ``bench/results/`` (gitignored). Progress lines go to stderr.

Workload (issue 12): the simulator replaying synthetic recordings (bench/recording.py) of five
venues (Binance, Bitstamp, Kraken, Coinbase, Gemini, each feed on its default API) x 20 symbols
at 10x live (100 events/s per symbol per venue = 10,000 events/s), every process's metrics
endpoint on as shipped.

Sections: 0 the issue's rows -- correctness (published top-N vs the simulator's truth), CPU per
frame end to end (after vs the ``--before`` revision run from its own tree in the same run, and
the bare relay chain), each feed's CPU per frame vs cryptofeed, capacity (streams at live rate),
1 vs 2 aggregator shards; 1 feed parse, 2 aggregator throughput vs a bare SortedDict loop, 3
end-to-end latency vs a bare relay chain of equal hops, 4 saturation, 5 fan-out, 6 memory (full),
7 scaling (two feed processes per venue, full), 8 peer (cryptofeed, a benchmark-only dependency:
``.venv/bin/pip install -e '.[bench]'``, which the make targets install), and with ``--profile``
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
BASE_REV = "38e3c534ab3aab27484e4922c21a929fadf5b9d0"   # issue 12's "before" (main before its work)


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
    capacity: list[int]         # symbols per venue at each capacity step (5 venues, live rate)
    capacity_window: float
    cpu_rounds: int             # before/after windows of the CPU-per-frame row, alternating
    cpu_multiples: tuple[float, ...] = (10,)   # rates with a before/after CPU-per-frame row (10x: the target)


QUICK = Mode("quick", 100, 5, 40_000, [10], 3.5, 1.5, 0.0, 0.0, 3.0, 4.0, [20, 100, 200], 4.0, 2)
FULL = Mode("full", 300, 9, 200_000, [1, 3, 10, 20, 30], 10.0, 3.0, 6.0, 45.0, 10.0, 12.0,
            [20, 50, 100, 200, 300], 6.0, 3, (3, 10))
CAPACITY = {"p99_us": 5000, "delivered": 0.99, "hold_ms": 100.0}


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
            fail("2 aggregator", label, ">= 30% of bare", e)
            continue
        RAW["aggregator"].append({"group": group, **r})
        ok = r["ratio"] >= 0.3 and r["bus_gaps_logged"] == 0
        row("2 aggregator", f"{label} ({r['levels_per_msg']} lv/msg, {r['messages']:,} msgs)",
            f"{r['levels_per_s']:,} lv/s ({r['msgs_per_s']:,} msg/s)", f"SortedDict {r['bare_levels_per_s']:,} lv/s",
            f"{100 * r['ratio']:.1f}%", ">= 30% of bare (issue 12)", "PASS" if ok else "MISS",
            f"aggregator CPU {r['aggregator_cpu_pct']}% of a core; {r['snapshots_published']} snapshots published "
            f"(coalesced per drain round); bus gaps {r['bus_gaps_logged']}", data=r)


# --- 3-7 --------------------------------------------------------------------------------------


def _feed_bytes() -> int:
    """Mean msgpack size of a feed-bus delta (from section 1's real-shaped frames)."""
    sizes = [r["bus_delta_bytes"] for r in RAW.get("parse", []) if r.get("source") == "generated"]
    return int(sum(sizes) / len(sizes)) if sizes else 140


def _held(r: dict[str, Any]) -> bool:
    return bool(r.get("n")) and r["p99_us"] <= 10_000 and r["events_per_s"] >= 0.9 * r["nominal_events_per_s"]


STARTUP_S = 6.0   # recording seconds allowed for a pipeline to start and sync (live after ~2-3 s)
CHECK_SYMBOLS = ["BTC/USDT", "DOGE/USDT", "TRX/USDT"]


def rec_seconds(mode: Mode, mult: float, profile: bool) -> float:
    """How long the recording at ``mult`` must last: every connection replays it from its start, so
    the longest-lived run against it (bookmux with its extra windows, or one of the others)."""
    window = mode.warm + mode.window + 1
    bookmux = STARTUP_S + window
    if mult == 1 and mode.fanout_window:
        bookmux += 3 * (1.5 + mode.fanout_window)
    if mult == 10:
        bookmux += (max(10.0, mode.window) + 1.5 if profile else 0) + (mode.soak + 1 if mode.soak else 0)
        bookmux = max(bookmux, STARTUP_S + mode.warm + mode.scaling_window + 1,
                      STARTUP_S + max(4.0, mode.warm + 2.5) + mode.peer_window + 1)
    return max(bookmux, STARTUP_S + window) + 2


def materialise(rev: str, work: Path) -> Path:
    """``rev``'s tree (``git archive``) in ``work/before-<rev>``: the "before" the services run from."""
    out = work / f"before-{rev[:12]}"
    if (out / "services").is_dir():
        return out
    out.mkdir(parents=True, exist_ok=True)
    arch = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True,
                          timeout=120)
    if arch.returncode != 0:
        raise RuntimeError(f"git archive {rev}: {arch.stderr.decode(errors='replace').strip()[:300]}")
    subprocess.run(["tar", "x", "-C", str(out)], input=arch.stdout, check=True, timeout=120)
    return out


def _frames_in(r: dict[str, Any]) -> float:
    return float(r.get("events") or 0)


def sec_pipeline(mode: Mode, work: Path, profile: bool, before: Path | None) -> None:
    from bench.pipeline import KINDS, Pipeline, recording_for

    RAW["e2e"] = {}
    mem_report: dict[str, Any] | None = None
    for mult in mode.multiples:
        progress(f"pipeline at {mult:g}x live ({mult * 10:g} frames/s per symbol per venue, 20 symbols, "
                 f"{len(KINDS)} venues)")
        try:
            rec = recording_for(work, mult, rec_seconds(mode, mult, profile))
        except Exception as e:
            fail("3 e2e", f"{mult:g}x", "-", e)
            continue
        entry: dict[str, Any] = {"multiple": mult}
        RAW["e2e"][f"{mult:g}x"] = entry
        p = Pipeline(work / f"e2e_{mult:g}x", mult, recording=rec)
        try:
            p.start_sim()
            if mult in mode.cpu_multiples and before is not None:
                # The same simulator and recording; the before's services from its tree. Before and
                # after alternate (B A B ... A) so both meet the machine's other load alike; the
                # CPU row sums every window of each.
                entry["before_windows"], entry["after_windows"] = [], []
                for i in range(mode.cpu_rounds):
                    p.stop_procs(root=before)
                    try:
                        progress(f"  the before ({before.name}) at {mult:g}x, window {i + 1}/{mode.cpu_rounds}")
                        entry["before_live_after_s"] = round(p.start_bookmux(), 2)
                        entry["before"] = p.measure(mode.window, warm=mode.warm, tag=f"before{i}")
                        entry["before_windows"].append(entry["before"])
                    except Exception as e:
                        entry["before_error"] = f"{type(e).__name__}: {e}"
                        progress(f"  before FAILED: {entry['before_error']}")
                        p.stop_procs(root=REPO)
                        break
                    p.stop_procs(root=REPO)
                    if i < mode.cpu_rounds - 1:
                        p.start_bookmux()
                        entry["after_windows"].append(p.measure(mode.window, warm=mode.warm, tag=f"after{i}"))
                        p.stop_procs()
            p.start_bare(_feed_bytes(), 1000)
            entry["bare"] = p.measure(mode.window, warm=mode.warm)
            p.stop_procs()
            entry["live_after_s"] = round(p.start_bookmux(), 2)
            warm_from = time.monotonic()
            entry["bookmux"] = p.measure(mode.window, warm=mode.warm)
            if "after_windows" in entry:
                entry["after_windows"].append(entry["bookmux"])
            if mult == 1 and mode.fanout_window:
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
                progress("  checking published books against the simulator's truth (waits for the replay's end)")
                entry["books"] = p.check_books(CHECK_SYMBOLS)
                entry["feed_counters"] = p.feed_counters()
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            progress(f"  FAILED: {entry['error']}")
            RAW.setdefault("errors", []).append({"section": f"e2e {mult:g}x", "error": entry["error"],
                                                 "trace": traceback.format_exc()[-3000:]})
        finally:
            p.close()
    for entry in RAW["e2e"].values():
        if entry["multiple"] in mode.cpu_multiples:
            cpu_rows(entry, before)
    ten = RAW["e2e"].get("10x")
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
            f"subscriber seq gaps {b['seq_gaps']}, bus gaps {b['bus_gaps']:g}; CPU % {_cpu_str(b['cpu'])}",
            data={"bookmux": b, "bare": z})
    # 4 saturation
    tested = [(e["multiple"], e["bookmux"]) for e in RAW["e2e"].values() if e.get("bookmux")]
    if len(tested) > 1:
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
        busiest = max((k for k in cpu if not k.startswith(("_", "sub_")) and k != "bench_runner"), key=lambda k: cpu[k])
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
    elif "1x" in RAW["e2e"]:
        row("5 fan-out", "1x", "-", "-", "-", "p99 <= 10ms", "MISS", f"could not measure: {one.get('error')}")
    # 6 memory
    if mem_report:
        for name, m in mem_report.items():
            g = m["growth_pct_per_min"]
            is_ours = name != "simulator"
            ok = g is not None and g <= 1.0
            row("6 memory", f"{name} (10x, {m['span_s']:.0f}s warm)", f"peak {m['peak_mib']} MiB", "-",
                f"{g if g is not None else '-'} %/min", "<= 1%/min once warm" if is_ours else "n/a (load generator)",
                ("PASS" if ok else "MISS") if is_ours and g is not None else "INFO",
                "" if g is not None else "window too short for a slope (quick mode); run make bench", data=m)
    elif ten is not None:
        row("6 memory", "10x", "-", "-", "-", "<= 1%/min", "MISS", "the 10x run did not complete")


def _ours_cpu_s(r: dict[str, Any]) -> float:
    return sum(v for k, v in r["cpu_seconds"].items() if k.startswith(("feed_", "aggregator", "publisher")))


def cpu_rows(e: dict[str, Any], before: Path | None) -> None:
    """0 correctness (10x) and CPU per frame rows of a run with a before (after, before, bare chain).
    The target is at 10x; below it (full mode: 3x) the row is INFO: there neither side saturates
    the machine, so neither coalesces more because it is starved."""
    b, z, old = e.get("bookmux"), e.get("bare"), e.get("before")
    at = f"{e['multiple']:g}x"
    target_at = e["multiple"] == 10
    books = e.get("books")
    counters = e.get("feed_counters") or {}
    if not target_at:
        pass
    elif b and books is not None:
        mism = books["mismatches"]
        ok = not mism and books["checked"] > 0 and not counters.get("checksum_failures")
        row("0 correct", f"10x: every venue live, {books['checked']} symbols' top-{10} vs simulator truth",
            f"{len(mism)} mismatches", "simulator /book merged independently", "-",
            "0 mismatches, 0 checksum failures", "PASS" if ok else "MISS",
            f"{'; '.join(mism)[:400]} feed counters over the run: {counters}".strip(), data=books)
    else:
        row("0 correct", "10x", "-", "-", "-", "0 mismatches", "MISS", f"could not measure: {e.get('error')}")
    if not b:
        row("0 cpu", f"CPU per frame end to end at {at}", "-", "-", "-", "<= 1/3 of before", "MISS",
            f"could not measure: {e.get('error')}")
        return
    def per_frame(windows: list[dict[str, Any]]) -> float:
        return 1e6 * sum(_ours_cpu_s(w) for w in windows) / max(1.0, sum(_frames_in(w) for w in windows))
    afters = e.get("after_windows") or [b]
    befores = e.get("before_windows") or ([old] if old else [])
    after_us = per_frame(afters)
    bare_us = per_frame([z]) if z else float("nan")
    spread = ""
    if old:
        before_us = per_frame(befores)
        ratio = after_us / before_us
        spread = (f"; windows (alternating): before {', '.join(f'{per_frame([w]):.0f}' for w in befores)} us, "
                  f"after {', '.join(f'{per_frame([w]):.0f}' for w in afters)} us")
        base = f"before {before_us:.0f} us ({old['events_per_s']:.0f} ev/s in)"
        verdict = "PASS" if ratio <= 1 / 3 else "MISS"
        rs = f"{ratio:.2f}x before, {after_us / bare_us:.1f}x bare"
        spread += (f"; snapshots/s after {sum(w['snapshots_per_s'] for w in afters) / len(afters):.0f}, before "
                   f"{sum(w['snapshots_per_s'] for w in befores) / len(befores):.0f}")
    else:
        base, verdict, rs = f"before: {e.get('before_error', 'not run (--before none)')}", "MISS", \
            f"{after_us / bare_us:.1f}x bare"
    if not target_at:
        verdict = "INFO"
    row("0 cpu", f"CPU per frame end to end at {at} (feeds+aggregator+publisher CPU s / frames in)",
        f"{after_us:.0f} us", base, rs, "<= 1/3 of before" if target_at else "n/a (target at 10x)", verdict,
        f"bare relay chain {bare_us:.1f} us per message (5 relay feeds + relay agg + relay pub); frames in = "
        f"simulator events sent in the window ({b['events_per_s']:.0f}/{b['nominal_events_per_s']:.0f} ev/s); "
        f"after CPU % {_cpu_str(b['cpu'])}" + (f"; before CPU % {_cpu_str(old['cpu'])}" if old else "")
        + f"; other load (not ours) {b['cpu'].get('_other', 0):.0f}%" + spread,
        data={"after_us": after_us, "before_us": per_frame(befores) if befores else None, "bare_us": bare_us})
    per = b.get("per_venue_events", {})
    parts = []
    for k, v in per.items():
        cs = b["cpu_seconds"].get(f"feed_{k}")
        if cs is not None and v:
            ob = (old or {}).get("cpu_seconds", {}).get(f"feed_{k}")
            ov = (old or {}).get("per_venue_events", {}).get(k)
            parts.append(f"{k} {1e6 * cs / v:.0f} us" + (f" (before {1e6 * ob / ov:.0f})" if ob and ov else ""))
    agg = sum(v for k, v in b["cpu_seconds"].items() if k.startswith("aggregator"))
    pub = b["cpu_seconds"].get("publisher", 0.0)
    snaps = max(1.0, b["snapshots_per_s"] * b["window_s"])
    row("0 cpu", f"per process at {at}", f"feeds: {', '.join(parts)}", "-", "-", "n/a (where the CPU goes)", "INFO",
        f"aggregator {1e6 * agg / max(1.0, _frames_in(b)):.0f} us per frame in; publisher "
        f"{1e6 * pub / snaps:.0f} us per snapshot out ({b['snapshots_per_s']:.0f}/s)")


def _cpu_str(cpu: dict[str, float]) -> str:
    short = {"feed_binance": "fbin", "feed_bitstamp": "fbts", "feed_kraken": "fkrk", "feed_coinbase": "fcb",
             "feed_gemini": "fgem", "aggregator": "agg", "aggregator_0": "agg0", "aggregator_1": "agg1",
             "publisher": "pub",
             "simulator": "sim",
             "_machine": "machine", "_other": "other"}
    parts = []
    subs = 0.0
    for k, v in cpu.items():
        if k.startswith("sub_"):
            subs += v
        elif k.startswith("feed_") and k not in short:
            parts.append(f"f{k[5:8]}{k.rsplit('_', 1)[1] if k[-1].isdigit() else ''} {v:.0f}")
        elif k != "bench_runner" and k != "peer":
            parts.append(f"{short.get(k, k)} {v:.0f}")
    if subs:
        parts.append(f"subs {subs:.0f}")
    return ", ".join(parts)


def _variant(mode: Mode, work: Path, profile: bool, section: str, what: str, tag: str,
             **pipeline: Any) -> dict[str, Any] | None:
    """One window of the 10x workload with the pipeline built otherwise (``pipeline``: keywords of
    :class:`bench.pipeline.Pipeline`, e.g. feed or aggregator shards); None (and a failed row)
    when it could not be measured."""
    from bench.pipeline import Pipeline, recording_for

    mult = 10
    try:
        p = Pipeline(work / tag, mult, recording=recording_for(work, mult, rec_seconds(mode, mult, profile)),
                     **pipeline)
    except Exception as e:
        fail(section, f"{mult}x", "n/a", e)
        return None
    try:
        p.start_sim()
        p.start_bookmux()
        return p.measure(mode.scaling_window, warm=mode.warm, tag=tag)
    except Exception as e:
        fail(section, f"{mult}x, {what}", "n/a", e)
        return None
    finally:
        p.close()


def sec_scaling(mode: Mode, work: Path, profile: bool) -> None:
    mult = 10
    single = RAW.get("e2e", {}).get(f"{mult}x", {}).get("bookmux")
    r = _variant(mode, work, profile, "7 scaling", "2 feed processes per venue", "split", split=True)
    if r is None:
        return
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


# --- capacity, shards ----------------------------------------------------------------------------


def _cap_ok(r: dict[str, Any]) -> list[str]:
    """Why a capacity step fails (empty: it holds)."""
    why = []
    if not r.get("n") or r["p99_us"] > CAPACITY["p99_us"]:
        why.append(f"p99 {us(r.get('p99_us'))}")
    if r["events_per_s"] < CAPACITY["delivered"] * r["nominal_events_per_s"]:
        why.append(f"delivered {r['events_per_s']:.0f}/{r['nominal_events_per_s']:.0f} ev/s")
    if r["bus_gaps"] != 0:
        why.append(f"bus gaps {r['bus_gaps']:g}")
    if r["seq_gaps"]:
        why.append(f"seq gaps {r['seq_gaps']}")
    if r["max_hold_ms"] > CAPACITY["hold_ms"]:
        why.append(f"an input held {r['max_hold_ms']:.0f} ms")
    return why


def sec_capacity(mode: Mode, work: Path) -> None:
    """At live rates, ramp the (venue, symbol) streams until a step misses; the largest that holds."""
    from bench.pipeline import KINDS, Pipeline, recording_for, symbols

    RAW["capacity"] = {}
    best: tuple[int, dict[str, Any]] | None = None
    misses: list[str] = []
    streak = 0
    for n in mode.capacity:
        if streak >= 2 and mode.name == "full":
            break       # two steps in a row missed: larger ones will not hold either (quick: 3 steps, all run)
        streams = n * len(KINDS)
        progress(f"capacity: {len(KINDS)} venues x {n} symbols = {streams} streams at live rate")
        syms = symbols(n)
        try:
            rec = recording_for(work, 1, 15 + n / 10 + mode.warm + mode.capacity_window + 2, syms)
            p = Pipeline(work / f"cap_{streams}", 1, symbols=syms, recording=rec)
        except Exception as e:
            fail("0 capacity", f"{streams} streams", ">= 1,000 streams", e)
            break
        try:
            p.start_sim()
            live = p.start_bookmux(timeout=60 + n / 2)
            r = p.measure(mode.capacity_window, warm=mode.warm, tag=f"cap{streams}")
            r["live_after_s"] = round(live, 1)
        except Exception as e:
            RAW["capacity"][streams] = {"error": f"{type(e).__name__}: {e}"}
            misses.append(f"{streams}: {type(e).__name__}: {str(e)[:150]}")
            progress(f"  FAILED: {e}")
            streak += 1
            continue
        finally:
            p.close()
        RAW["capacity"][streams] = r
        why = _cap_ok(r)
        if why:
            misses.append(f"{streams} miss: {', '.join(why)}")
            streak += 1
        else:
            streak = 0
            if best is None or streams > best[0]:
                best = (streams, r)
    steps = ", ".join(str(k) for k in RAW["capacity"])
    value = f"{best[0]} streams hold" if best else "no step holds"
    per = "; ".join(f"{k}: p99 {us(v.get('p99_us'))}, {v['events_per_s']:.0f}/{v['nominal_events_per_s']:.0f} ev/s, "
                    f"hold {v['max_hold_ms']:.0f} ms, seq gaps {v['seq_gaps']}, bus gaps {v['bus_gaps']:g}, "
                    f"other load {v['cpu'].get('_other', 0):.0f}%"
                    for k, v in RAW["capacity"].items() if "error" not in v)
    note = f"{per}. " + (" ".join(misses) + ". " if misses else "")
    if best:
        note += f"At {best[0]}: CPU % {_cpu_str(best[1]['cpu'])}"
    row("0 capacity", f"streams at live rate (10 ev/s each), ramp {steps}", value,
        "-", "-", ">= 1,000 streams (p99 <= 5ms, >= 99% delivered, 0 bus/seq gaps, hold <= 100ms)",
        "PASS" if best and best[0] >= 1000 else "MISS", note,
        data={k: {kk: vv for kk, vv in v.items() if kk != "cpu_seconds"} for k, v in RAW["capacity"].items()})


def shards_available() -> bool:
    """Whether this tree's aggregator takes ``--shard`` (``[[aggregator.shards]]``)."""
    try:
        out = subprocess.run([sys.executable, "-m", "services.aggregator", "--help"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--shard" in out.stdout


def sec_shards(mode: Mode, work: Path, profile: bool) -> None:
    """The same 10x workload with two aggregator shards (half the symbols each) vs one."""
    mult = 10
    single = RAW.get("e2e", {}).get(f"{mult}x", {}).get("bookmux")
    if not shards_available():
        row("0 1 vs 2 agg", f"{mult}x, 2 aggregator shards", "n/a: aggregator shards not available", "-", "-",
            "n/a (a row shows 1 vs 2)", "INFO", "python -m services.aggregator --help has no --shard")
        return
    r = _variant(mode, work, profile, "0 1 vs 2 agg", "2 aggregator shards", "shards", agg_shards=2)
    if r is None:
        return
    RAW["shards"] = r
    two_us = 1e6 * _ours_cpu_s(r) / max(1.0, _frames_in(r))
    base = "-"
    ratio = "-"
    if single:
        one_us = 1e6 * _ours_cpu_s(single) / max(1.0, _frames_in(single))
        base = f"1 aggregator: p50 {us(single['p50_us'])} p99 {us(single['p99_us'])}, {one_us:.0f} us CPU/frame"
        if single.get("p99_us"):
            ratio = f"p99 {r['p99_us'] / single['p99_us']:.2f}x, CPU {two_us / one_us:.2f}x"
    aggs = {k: v for k, v in r["cpu"].items() if k.startswith("aggregator")}
    row("0 1 vs 2 agg", f"{mult}x, 2 aggregator shards (half the symbols each)",
        f"{lat_str(r)}; {two_us:.0f} us CPU/frame", base, ratio, "n/a (a row shows 1 vs 2)", "INFO",
        f"aggregators CPU % {aggs}; seq gaps {r['seq_gaps']}, bus gaps {r['bus_gaps']:g}; "
        f"{r['events_per_s']:.0f}/{r['nominal_events_per_s']:.0f} ev/s; CPU % {_cpu_str(r['cpu'])}", data=r)


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
        p = Pipeline(work / "peer", mult, kinds=("binance", "bitstamp"),
                     recording=recording_for(work, mult, rec_seconds(mode, mult, profile)))
    except Exception as e:
        fail("8 peer", "cryptofeed", "n/a", e)
        return
    try:
        p.start_sim()
        start = time.time() + max(4.0, mode.warm + 2.5)   # it fetches snapshots lazily: give it time
        stop = start + mode.peer_window
        out = p.dir / "peer.lat"
        bp, sp = p.ports["binance"], p.ports["bitstamp"]
        p.tools.module("peer", "bench.peer", "--binance", f"ws://127.0.0.1:{bp}",
                       "--binance-rest", f"http://127.0.0.1:{bp}", "--bitstamp", f"ws://127.0.0.1:{sp}",
                       "--bitstamp-rest", f"http://127.0.0.1:{sp}", "--symbols", ",".join(SYMBOLS),
                       "--start", repr(start), "--stop", repr(stop), "--out", str(out))
        while time.time() < start:
            time.sleep(0.05)
        cpu = CpuWindow(p.tools.pids() | p.sim.pids())
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
        log = p.tools.log("peer")
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
    base = f"bookmux p50 {us(ours['p50_us'])} p99 {us(ours['p99_us'])}" if ours else "-"
    row("8 peer", f"cryptofeed {mult}x frame->callback (one hop fewer: no bus, no merge)", lat_str(r), base, "-",
        "n/a (say honestly where it is ahead)", "INFO",
        f"cryptofeed {r['callbacks_per_s']:.0f} callbacks/s at {r['events_per_s']:.0f} ev/s delivered", data=r)
    if not ours:
        row("0 feed vs peer", "feed CPU per frame vs cryptofeed", "-", f"cryptofeed {peer_us_frame:.0f} us", "-",
            "below cryptofeed", "MISS", "the 10x bookmux run did not complete")
        return
    for k in ("binance", "bitstamp"):
        cs, n = ours["cpu_seconds"].get(f"feed_{k}"), ours.get("per_venue_events", {}).get(k)
        if cs is None or not n:
            row("0 feed vs peer", f"feed_{k}", "-", f"cryptofeed {peer_us_frame:.0f} us", "-", "below cryptofeed",
                "MISS", "no CPU figure for this feed")
            continue
        mine = 1e6 * cs / n
        r[f"bookmux_feed_{k}_us_per_frame"] = round(mine, 1)
        row("0 feed vs peer", f"feed_{k} CPU per frame at {mult}x (parse+sync+apply+publish, metrics on)",
            f"{mine:.0f} us", f"cryptofeed {peer_us_frame:.0f} us", f"{mine / peer_us_frame:.2f}x",
            "below cryptofeed", "PASS" if mine < peer_us_frame else "MISS",
            "cryptofeed: one process for Binance+Bitstamp on the same recorded frames (same generator and seed), "
            "its C order book, an in-process callback; its CPU over the frames the simulator sent it")


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
    ap.add_argument("--only", default="",
                    help="comma-separated sections to run: parse,agg,e2e,capacity,shards,scaling,peer")
    ap.add_argument("--profile", action="store_true", help="py-spy the aggregator and a feed under the 10x load")
    ap.add_argument("--before", default=BASE_REV, metavar="REV",
                    help="the revision whose services are the 'before' of the CPU-per-frame row, run in the same "
                         "run from a copy of its tree (git archive) in the results folder; 'none' skips it "
                         f"(default: {BASE_REV[:12]})")
    a = ap.parse_args(argv)
    mode = FULL if a.full else QUICK
    sections = ["parse", "agg", "e2e", "capacity", "shards", "scaling", "peer"]
    only = {s for s in a.only.split(",") if s} or set(sections) - ({"scaling"} if not a.full else set())
    install_cleanup()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = RESULTS / f"{stamp}-{mode.name}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    progress(f"bookmux bench ({mode.name}): results in {work}")
    RAW["meta"] = {"mode": mode.name, "started": stamp, "python": platform.python_version(),
                   "cpus": os.cpu_count(), "machine": platform.machine(), "git": _git_rev()}
    interrupted = False
    before: Path | None = None
    try:
        if "e2e" in only and a.before != "none":
            try:
                before = materialise(a.before, work)
                RAW["meta"]["before"] = a.before
                progress(f"the before: {a.before} in {before}")
            except Exception as e:
                progress(f"the before could not be materialised: {e}")
                RAW.setdefault("errors", []).append({"section": "before", "error": str(e)})
        for name, fn in (("parse", sec_parse), ("agg", sec_aggregator)):
            if name in only:
                progress(f"section {name}")
                try:
                    fn(mode, work)
                except Exception as e:
                    fail(name, "all", "-", e)
        if "e2e" in only:
            progress("sections 0, 3-6: CPU per frame (after, before, bare), correctness, end-to-end, saturation, "
                     "fan-out, memory")
            sec_pipeline(mode, work, a.profile, before)
        if "capacity" in only:
            progress("section 0: capacity")
            sec_capacity(mode, work)
        if "shards" in only:
            progress("section 0: 1 vs 2 aggregators")
            sec_shards(mode, work, a.profile)
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
