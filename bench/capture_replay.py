"""Capture N minutes of the demo, then replay it: deterministically (feed cores + aggregator, in
process) and through the simulator (the venues' wire protocols, as fast as possible or at a
given speed). Reports the capture's size, the replay speeds (frames/s, x real time) and whether
the books were equal. Not part of ``make test``.

  python -m bench.capture_replay --minutes 5
  python -m bench.capture_replay --minutes 1 --speed 0 --speed 10 --keep run/capture-bench

What runs: the demo config (deploy/demo.toml) with every port moved to a free one -- the
simulator, every enabled feed with ``--capture``, the aggregator and the publisher -- for N
minutes; then every feed is stopped (SIGTERM, as supervisord does). Phase 2 replays the capture
twice with ``python -m services.replay``'s engine: per-venue books against the recorded run after
every input, and identical published books on both runs. Phase 3 starts a simulator that plays
the capture back (``--replay DIR --replay-speed S``) and the feeds again (no capture), waits until
every captured frame was sent and each feed holds the books the captured feed ended with.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
import zmq

from bench.util import REPO, Procs, free_port, install_cleanup, progress, wait_until
from common import schema, venues
from common.config import load
from common.feed.capture import WS, find_runs
from common.feed.replay import final_books, verify_runs
from services.replay.engine import replay

DEMO = REPO / "deploy" / "demo.toml"
Side = dict[Decimal, Decimal]
LOOPBACK = re.compile(r"(127\.0\.0\.1|localhost):(\d+)")


def relocate(raw: dict[str, Any]) -> list[str]:
    """``--set`` flags that move every loopback port of a config to a free one (the same old
    port to the same new one everywhere, so a venue's URLs still meet its simulator port)."""
    ports: dict[int, int] = {}

    def new(port: int) -> int:
        if port not in ports:
            ports[port] = free_port()
        return ports[port]

    sets: list[str] = []

    def walk(d: dict[str, Any], path: str) -> None:
        for k, v in d.items():
            p = f"{path}.{k}" if path else k
            if isinstance(v, dict):
                walk(v, p)
            elif isinstance(v, str) and LOOPBACK.search(v):
                moved = LOOPBACK.sub(lambda m: f"{m[1]}:{new(int(m[2]))}", v)
                sets.append(f"{p}={moved}")
            elif k in ("port", "control_port") and isinstance(v, int) and not isinstance(v, bool):
                sets.append(f"{p}={new(v)}")

    walk(raw, "")
    return sets


def feed_books(ctx: zmq.Context, ctl: str) -> dict[str, tuple[Side, Side]] | None:
    """A feed's live books from its snapshot service (None: no answer within 5 s)."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ctl)
    try:
        s.send(schema.encode_snapshot_request([]))
        if not s.poll(5000):
            return None
        out = {}
        for raw in s.recv_multipart():
            m = schema.decode_feed_payload(schema.unpack(raw))
            if isinstance(m, schema.BookMsg):
                out[m.symbol] = (dict(m.bids), dict(m.asks))
        return out
    finally:
        s.close(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.capture_replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to capture (default: %(default)s)")
    ap.add_argument("--speed", type=float, action="append", default=None,
                    help="simulator replay speed(s): 0 = as fast as possible (default), 1 = captured pace, "
                         "N = N x; repeat for several")
    ap.add_argument("--venues", default=None, help="comma-separated venue ids (default: every demo venue)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep the capture and logs in DIR (default: a temporary folder, removed)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = ap.parse_args(argv)
    install_cleanup()
    for name in ("aggregator", "replay"):        # the replays' own log lines would drown the report
        logging.getLogger(name).setLevel(logging.ERROR)
    speeds = args.speed or [0.0]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="capture-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "capture"
    if folder.exists():
        shutil.rmtree(folder)
    raw = tomllib.loads(DEMO.read_text())
    base_sets = [*relocate(raw), f"run_dir={work}"]
    flags = ["--config", str(DEMO)]
    for s in base_sets:
        flags += ["--set", s]
    if args.venues:
        flags += ["--venues", args.venues]
    cfg = load(DEMO, sets=base_sets, venues=args.venues)
    ids = [v.id for v in cfg.enabled_venues]
    result: dict[str, Any] = {"minutes": args.minutes, "venues": ids}
    ctx = zmq.Context()
    try:
        # --- 1. capture ------------------------------------------------------------------------
        progress(f"capturing {args.minutes:g} min of the demo ({', '.join(ids)}) to {folder}")
        with Procs(work / "logs-capture") as procs:
            procs.module("simulator", "services.simulator", *flags)
            wait_until(lambda: _up(cfg), 60, what="simulator up")
            for vid in ids:
                procs.module(f"feed_{vid}", venues.kind(cfg.venue(vid).kind).feed, "--venue", vid, *flags,
                             "--capture", str(folder))
            procs.module("aggregator", "services.aggregator", *flags)
            procs.module("publisher", "services.publisher", *flags)
            wait_until(lambda: all(set(feed_books(ctx, cfg.venue(v).ctl) or {}) == set(cfg.venue(v).symbols)
                                   for v in ids), 120, what="every feed synced", step=1.0)
            t_end = time.monotonic() + args.minutes * 60
            while time.monotonic() < t_end:
                time.sleep(min(30.0, max(0.0, t_end - time.monotonic())))
                dead = procs.dead()
                if dead:
                    raise RuntimeError(f"died while capturing: {dead}")
                size = sum(p.stat().st_size for p in folder.glob("*.cap.gz"))
                progress(f"capturing: {size / 1e6:.1f} MB so far, {max(0.0, t_end - time.monotonic()):.0f} s left")
            for vid in ids:
                procs.stop(f"feed_{vid}", timeout=15)
        runs = find_runs(folder)
        frames = {r.venue: sum(1 for rec in r.records() if rec[0] == WS) for r in runs}
        size = sum(p.stat().st_size for r in runs for p in r.paths)
        result["capture"] = {"files": sum(len(r.paths) for r in runs), "mb": round(size / 1e6, 2),
                             "frames": frames, "sessions": len(runs)}
        progress(f"captured {sum(frames.values())} frames ({frames}) in {result['capture']['files']} files, "
                 f"{size / 1e6:.1f} MB")

        # --- 2. deterministic replay -----------------------------------------------------------
        base = load(DEMO, sets=base_sets, venues=args.venues)
        feeds_only = verify_runs(runs)
        print(f"feed cores only (no aggregator): {feeds_only.inputs} inputs ({feeds_only.frames} frames) in "
              f"{feeds_only.seconds:.2f} s: {feeds_only.frames / feeds_only.seconds:,.0f} frames/s; books "
              f"{'EQUAL' if feeds_only.book_mismatches == 0 else 'DIFFERENT'} after every input")
        r1 = replay(runs, base)
        r2 = replay(runs, base)
        print(f"deterministic run 1: {r1.summary()}")
        print(f"deterministic run 2: {r2.summary()}")
        same = r1.digest == r2.digest and r1.published == r2.published
        print("deterministic: identical published books on both runs" if same else
              "deterministic: the two runs published DIFFERENT books")
        if r1.verdict.first_mismatch:
            print(f"first mismatch: {r1.verdict.first_mismatch}")
        result["deterministic"] = {
            "inputs": r1.verdict.inputs, "frames": r1.verdict.frames, "captured_s": round(r1.span_s, 1),
            "seconds": [round(r1.seconds, 2), round(r2.seconds, 2)],
            "frames_per_s": [round(r1.frames_per_s), round(r2.frames_per_s)],
            "x_real_time": [round(r1.speedup, 1), round(r2.speedup, 1)],
            "book_checks": r1.verdict.book_checks, "book_mismatches": r1.verdict.book_mismatches,
            "bus_identical_steps": r1.verdict.inputs - r1.verdict.bus_mismatches, "published": r1.published,
            "identical_runs": same, "feed_cores_only_s": round(feeds_only.seconds, 2),
            "feed_cores_only_frames_per_s": round(feeds_only.frames / feeds_only.seconds)}

        # --- 3. through the simulator ------------------------------------------------------------
        result["simulator"] = [simulator_replay(speed, raw, work, folder, ids, args, ctx, runs, r1.span_s)
                               for speed in speeds]
    finally:
        ctx.term()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    ok = (result.get("deterministic", {}).get("book_mismatches") == 0
          and result.get("deterministic", {}).get("identical_runs")
          and all(all(r["books_equal"].values()) and len(r["books_equal"]) == len(ids) for r in result["simulator"]))
    return 0 if ok else 1


def simulator_replay(speed: float, raw: dict[str, Any], work: Path, folder: Path, ids: list[str],
                     args: argparse.Namespace, ctx: zmq.Context, runs: list[Any], span_s: float) -> dict[str, Any]:
    """Play the capture back through a simulator at ``speed`` to feeds without capture; wait
    until every frame was sent and each feed holds the captured books. One result row."""
    want_all = final_books(runs)
    frames = sum(1 for r in runs for rec in r.records() if rec[0] == WS)
    sets = [*relocate(raw), f"run_dir={work}"]
    flags = ["--config", str(DEMO)]
    for s in sets:
        flags += ["--set", s]
    if args.venues:
        flags += ["--venues", args.venues]
    cfg = load(DEMO, sets=sets, venues=args.venues)
    progress(f"simulator replay at speed {speed:g} ({'as fast as possible' if speed == 0 else f'{speed:g}x'})")
    finished: dict[str, float] = {}         # every captured frame sent (s after the feeds started)
    equal: dict[str, bool] = {}
    held: dict[str, float] = {}             # the feed holds the captured books
    with Procs(work / f"logs-replay-{speed:g}") as procs:
        procs.module("simulator", "services.simulator", *flags, "--replay", str(folder), "--replay-speed", str(speed))
        wait_until(lambda: _up(cfg), 60, what="simulator up")
        t0 = time.monotonic()
        for vid in ids:
            procs.module(f"feed_{vid}", venues.kind(cfg.venue(vid).kind).feed, "--venue", vid, *flags)

        def done() -> bool:
            h = _health(cfg)["venues"]
            for vid in ids:
                if vid not in finished and h.get(vid, {}).get("finished"):
                    finished[vid] = time.monotonic() - t0
            if len(finished) < len(ids):
                return False
            for vid in ids:
                if equal.get(vid):
                    continue
                want = {sym: b for (v, sym), b in want_all.items() if v == vid and (b[0] or b[1])}
                got = feed_books(ctx, cfg.venue(vid).ctl) or {}
                equal[vid] = {sym: got.get(sym) for sym in want} == want
                if equal[vid]:
                    held[vid] = time.monotonic() - t0
            return all(equal.values())

        limit = max(120.0, args.minutes * 60 / (speed or 50) * 3)
        try:
            wait_until(done, limit, what="every venue replayed with the captured books", step=0.2)
        except TimeoutError as e:
            progress(f"{e}: finished {finished}, equal {equal}")
    ok = len(held) == len(ids)
    elapsed = max(held.values()) if ok else float("nan")
    row = {"speed": speed, "seconds": round(elapsed, 2), "frames_per_s": round(frames / elapsed) if ok else 0,
           "x_real_time": round(span_s / elapsed, 1) if ok else 0,
           "sent_s": {k: round(v, 2) for k, v in finished.items()},
           "books_held_s": {k: round(v, 2) for k, v in held.items()}, "books_equal": equal}
    print(f"simulator replay at speed {speed:g}: {frames} frames replayed and every feed holding the captured books "
          f"{elapsed:.2f} s after the feeds started ({row['frames_per_s']:,} frames/s, {row['x_real_time']}x real "
          f"time; includes the feeds' start-up); books equal: {equal}")
    return row


def _health(cfg: Any) -> dict[str, Any]:
    port = cfg.simulator.get("control_port", 50090)
    body: dict[str, Any] = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    return body


def _up(cfg: Any) -> bool:
    try:
        return bool(_health(cfg).get("ok"))
    except (requests.RequestException, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
