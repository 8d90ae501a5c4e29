"""Capture and replay (docs/capture.md): a short capture of a real feed against the simulator
(with a gap and a dropped connection in it), replayed deterministically twice (identical
published books), checked against the recorded bus after every input, played back through the
simulator as fast as possible (the feed ends with the captured books); the writer's rotation,
a feed killed mid-file, a full disk and an unwritable folder."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq

from common import schema
from common.config import load
from common.feed import capture as cap
from common.feed.capture import CaptureError, CaptureRun, CaptureWriter, find_runs
from common.feed.replay import Side, final_books, verify_runs
from common.schema import LIVE, SNAP, BookMsg, StatusMsg, decode_merged
from services.replay.engine import replay
from services.simulator.market import canonical
from tests.harness import REPO, Procs, SimControl, free_port, wait_until, write_config

pytestmark = pytest.mark.timeout(240)

SYMS = ["BTC/USDT", "ETH/USDT"]


@dataclass
class Captured:
    tmp: Path
    cfg: Path
    folder: Path
    runs: list[CaptureRun]


def sim_section(port: int, ctl: int) -> str:
    return (f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {ctl}\nseed = 5\nrate = 20.0\n\n'
            f'[simulator.venues.binance]\nkind = "binance"\nport = {port}\n')


def binance(port: int) -> dict[str, Any]:
    return {"kind": "binance", "ws_url": f"ws://127.0.0.1:{port}", "rest_url": f"http://127.0.0.1:{port}",
            "stale_after": 3.0, "depth": 1000}


class BusWatch:
    """The feed's bus as a SUB socket sees it (connected before the feed starts)."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"md.")
        self.sock.connect(endpoint)
        self.msgs: list[schema.FeedMsg] = []

    def pump(self) -> None:
        while self.sock.poll(20):
            self.msgs.append(schema.decode_feed(self.sock.recv_multipart()))

    def count(self, pred: Any) -> int:
        return sum(1 for m in self.msgs if pred(m))


def after(watch: BusWatch, start: int | None, pred: Any) -> int | None:
    """The index just past the first message from ``start`` on that ``pred`` holds for; None when
    there is none (or ``start`` is None)."""
    if start is None:
        return None
    for i in range(start, len(watch.msgs)):
        if pred(watch.msgs[i]):
            return i + 1
    return None


def snap_of(symbol: str) -> Any:
    return lambda m: isinstance(m, BookMsg) and m.kind == SNAP and m.symbol == symbol


def status_of(symbol: str, status: str) -> Any:
    return lambda m: isinstance(m, StatusMsg) and m.symbol == symbol and m.status == status


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    """A few seconds of feed_binance against the simulator with --capture: both books synced, a
    gap on BTC/USDT (REST refetch), every connection dropped (reconnect), synced again, stopped."""
    tmp = tmp_path_factory.mktemp("capture")
    port, ctl = free_port(), free_port()
    cfg = tmp / "bookmux.toml"
    ep = write_config(cfg, symbols=SYMS, levels=5, depletion={"BTC/USDT": ["1", "5"]},
                      extra=sim_section(port, ctl), venues={"binance": binance(port)})
    folder = tmp / "cap"
    sim = SimControl(ctl)
    ctx = zmq.Context()
    watch = BusWatch(ctx, ep["binance"]["pub"])
    procs = Procs(tmp)
    try:
        procs.start("simulator", "services.simulator", "--config", str(cfg))
        wait_until(sim.up, timeout=60, what="simulator up")
        procs.start("feed", "services.feed_binance", "--venue", "binance", "--config", str(cfg),
                    "--capture", str(folder))
        # Synced (asked of its snapshot service: the first snaps may pass before the SUB joins),
        # and the SUB receiving.
        wait_until(lambda: set(feed_books(ctx, ep["binance"]["ctl"]) or {}) == set(SYMS) and len(watch.msgs) > 0,
                   pump=watch.pump, timeout=60, what="both books synced")
        n = len(watch.msgs)
        sim.get("/fault", venue="binance", kind="gap", symbol="BTC/USDT")
        wait_until(lambda: after(watch, n, snap_of("BTC/USDT")) is not None, pump=watch.pump, timeout=60,
                   what="BTC/USDT resynced after the gap")
        n = len(watch.msgs)
        sim.get("/fault", venue="binance", kind="drop")
        wait_until(lambda: all(after(watch, after(watch, n, status_of(s, "down")), snap_of(s)) is not None
                               for s in SYMS),
                   pump=watch.pump, timeout=60, what="both books synced after the drop")
        n = len(watch.msgs)
        wait_until(lambda: len(watch.msgs) >= n + 40, pump=watch.pump, timeout=60, what="40 more messages")
        procs.kill("feed", signal.SIGTERM)
        yield Captured(tmp, cfg, folder, find_runs(folder))
    finally:
        procs.close()
        watch.sock.close(0)
        ctx.term()


def test_capture_holds_every_input_and_the_bus(captured: Captured) -> None:
    """One session, one file, whole: two connections, the snapshots (initial, the gap's
    refetch, after the reconnect), frames, ticks, heartbeats, flushes, bus batches and the stop."""
    assert len(captured.runs) == 1
    run = captured.runs[0]
    kinds = Counter(rec[0] for rec in run.records())
    assert not run.truncated
    assert run.venue == "binance" and run.header["kind"] == "binance" and run.header["format"] == cap.FORMAT
    assert run.cfg.symbols == tuple(SYMS) and run.cfg.depth == 1000
    assert kinds[cap.START] == 1 and kinds[cap.STOP] == 1
    assert kinds[cap.OPEN] >= 2 and kinds[cap.CLOSE] == kinds[cap.OPEN] - 1   # the last one open at the stop
    snapshots = [rec for rec in run.records() if rec[0] == cap.REST and rec[4] is not None]
    assert Counter(rec[4] for rec in snapshots if rec[6] is not None) >= Counter({"BTC/USDT": 3, "ETH/USDT": 2})
    assert all(rec[3].startswith("http://127.0.0.1:") and "limit=1000" in rec[3] for rec in snapshots)
    assert kinds[cap.WS] > 50 and kinds[cap.BUS] > 20 and kinds[cap.TICK] > 0 and kinds[cap.HB] > 0
    assert kinds[cap.FLUSH] > 0
    mono = [rec[1] for rec in run.records()]
    assert mono == sorted(mono)


def test_deterministic_replay_twice_publishes_identical_books(captured: Captured) -> None:
    """Two deterministic replays (feed core + aggregator) publish the very same snapshots,
    bids, asks, venues and depletion included; live books with depletion were among them."""
    base = load(captured.cfg)
    r1 = replay(captured.runs, base, keep=True)
    r2 = replay(captured.runs, base, keep=True)
    assert r1.payloads is not None and r2.payloads is not None
    assert r1.published == r2.published == len(r1.payloads) > 10
    assert r1.payloads == r2.payloads
    assert r1.digest == r2.digest
    books = [decode_merged(f) for f in r1.payloads]
    live = [b for b in books if b.symbol == "BTC/USDT" and b.venues == {"binance": LIVE}]
    assert live and all(len(b.bids) == 5 and len(b.asks) == 5 for b in live)
    assert all(b.depletion is not None and set(b.depletion["sell"]) == {Decimal(1), Decimal(5)} for b in live)
    assert r1.verdict.equal


def test_replay_equals_the_recorded_run_after_every_input(captured: Captured) -> None:
    """After every captured input each venue book rebuilt from the replay equals the one rebuilt
    from what the feed published, and the messages are byte-identical."""
    run = captured.runs[0]
    v = verify_runs(captured.runs)
    kinds = Counter(rec[0] for rec in run.records())
    assert v.inputs == sum(n for k, n in kinds.items() if k in cap.INPUTS)
    assert v.frames == kinds[cap.WS]
    assert v.bus_messages == sum(len(rec[3]) for rec in run.records() if rec[0] == cap.BUS)
    assert (v.book_mismatches, v.bus_mismatches, v.first_mismatch) == (0, 0, None)
    assert v.book_checks >= v.frames // 2
    assert v.books == final_books(captured.runs, before_stop=False)


def test_replay_command(captured: Captured) -> None:
    """``python -m services.replay DIR --twice --json``: exit 0, equal books, identical runs."""
    import json

    p = subprocess.run([sys.executable, "-m", "services.replay", str(captured.folder), "--config", str(captured.cfg),
                        "--twice", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    v = verify_runs(captured.runs)
    assert (out["inputs"], out["frames"], out["book_mismatches"], out["bus_mismatches"]) == (v.inputs, v.frames, 0, 0)
    assert out["deterministic"] is True and out["first_mismatch"] is None
    assert [r["venue"] for r in out["runs"]] == ["binance"]


class WithoutFrame(CaptureRun):
    """A capture run with one WebSocket frame left out."""

    skip = 0

    def records(self) -> Iterator[list[Any]]:
        n = 0
        for rec in super().records():
            if rec[0] == cap.WS:
                n += 1
                if n == self.skip:
                    continue
            yield rec


def test_a_lost_frame_shows_as_a_difference(captured: Captured) -> None:
    """Leaving out one depth frame after the books are synced is caught: the replayed books
    differ from the recorded ones."""
    run = captured.runs[0]
    frames = [rec for rec in run.records() if rec[0] == cap.WS]
    idx = next(i for i, rec in enumerate(frames) if i > len(frames) // 2 and b'"depthUpdate"' in (
        rec[3].encode() if isinstance(rec[3], str) else rec[3]))
    broken = WithoutFrame(run.venue, run.sess, run.paths, run.header)
    broken.skip = idx + 1
    v = verify_runs([broken])
    assert v.book_mismatches > 0
    assert v.first_mismatch is not None and "book differs" in v.first_mismatch


def feed_books(ctx: zmq.Context, ctl: str) -> dict[str, tuple[Side, Side]] | None:
    """The feed's live books from its snapshot service (None: no answer)."""
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
            if isinstance(m, BookMsg):
                out[m.symbol] = (dict(m.bids), dict(m.asks))
        return out
    finally:
        s.close(0)


def test_simulator_replay_as_fast_as_possible(captured: Captured, tmp_path: Path) -> None:
    """The simulator plays the capture back on Binance's wire as fast as possible (both
    connections, every snapshot answer); a feed without capture ends with the captured books."""
    port, ctl = free_port(), free_port()
    cfg = tmp_path / "replay.toml"
    ep = write_config(cfg, symbols=SYMS, levels=5, extra=sim_section(port, ctl), venues={"binance": binance(port)})
    sim = SimControl(ctl)
    want = {sym: sides for (_v, sym), sides in final_books(captured.runs).items()}
    assert set(want) == set(SYMS) and all(b and a for b, a in want.values())
    ctx = zmq.Context()
    procs = Procs(tmp_path)
    try:
        procs.start("simulator", "services.simulator", "--config", str(cfg), "--replay", str(captured.folder),
                    "--replay-speed", "0")
        wait_until(sim.up, timeout=60, what="simulator up")
        bids, asks = want["BTC/USDT"]
        assert sim.truth("binance", "BTC/USDT") == (
            [[canonical(p), canonical(q)] for p, q in sorted(bids.items(), reverse=True)],
            [[canonical(p), canonical(q)] for p, q in sorted(asks.items())])
        procs.start("feed", "services.feed_binance", "--venue", "binance", "--config", str(cfg))
        got: dict[str, Any] = {}

        def done() -> bool:
            h = sim.get("/health")["venues"]["binance"]
            if not h["finished"]:
                return False
            got.clear()
            got.update(feed_books(ctx, ep["binance"]["ctl"]) or {})
            return got == want

        try:
            wait_until(done, timeout=120, what="the replay finished and the feed holds the captured books")
        except AssertionError:
            raise AssertionError(f"feed books {{s: (len(b), len(a))}}: "
                                 f"{ {s: (len(b), len(a)) for s, (b, a) in got.items()} }, captured "
                                 f"{ {s: (len(b), len(a)) for s, (b, a) in want.items()} }; "
                                 f"health {sim.get('/health')['venues']['binance']}") from None
        assert sim.get("/stats")["venues"]["binance"]["connections_total"] >= 2
    finally:
        procs.close()
        ctx.term()


def test_a_killed_feed_leaves_a_capture_that_replays(tmp_path: Path) -> None:
    """A feed killed with SIGKILL while capturing leaves a file without its end; it reads up to
    the last written batch and replays equal to the recorded run up to there."""
    port, ctl = free_port(), free_port()
    cfg = tmp_path / "c.toml"
    ep = write_config(cfg, symbols=SYMS, extra=sim_section(port, ctl), venues={"binance": binance(port)})
    sim = SimControl(ctl)
    ctx = zmq.Context()
    procs = Procs(tmp_path)
    try:
        procs.start("simulator", "services.simulator", "--config", str(cfg))
        wait_until(sim.up, timeout=60, what="simulator up")
        procs.start("feed", "services.feed_binance", "--venue", "binance", "--config", str(cfg),
                    "--capture", str(tmp_path / "cap"))
        wait_until(lambda: set(feed_books(ctx, ep["binance"]["ctl"]) or {}) == set(SYMS), timeout=60,
                   what="both books synced")

        def frames_on_disk() -> int:
            try:
                return sum(1 for rec in find_runs(tmp_path / "cap")[0].records() if rec[0] == cap.WS)
            except CaptureError:
                return 0

        wait_until(lambda: frames_on_disk() >= 60, timeout=60, what="60 frames on disk")
        procs.kill("feed", signal.SIGKILL)
    finally:
        procs.close()
        ctx.term()
    (run,) = find_runs(tmp_path / "cap")
    v = verify_runs([run])
    assert run.truncated and v.truncated
    assert v.frames >= 60
    assert (v.book_mismatches, v.bus_mismatches, v.first_mismatch) == (0, 0, None)


# --- the writer -----------------------------------------------------------------------------------


def header(venue: str = "v", sess: int = 1) -> dict[str, Any]:
    return {"format": cap.FORMAT, "venue": venue, "kind": "binance", "api": "spot", "sess": sess, "cfg": {},
            "opts": {}}


def write_records(w: CaptureWriter, n: int) -> list[list[Any]]:
    sent = []
    for i in range(n):
        rec = [cap.WS, float(i), i, f'{{"n":{i},"pad":"{os.urandom(24).hex()}"}}']
        sent.append(rec)
        w.add(rec)
        if i % 500 == 499:
            wait_until(lambda: w.stats.written_records >= len(sent), timeout=30, what="a batch written")
    w.close()
    assert w.error is None
    return sent


def test_rotation_by_size(tmp_path: Path) -> None:
    """Small parts rotate by size, each starting with the header; all records read back in order."""
    sent = write_records(CaptureWriter(tmp_path, "v", 7, header(sess=7), rotate_mb=0.02), 3000)
    (run,) = find_runs(tmp_path)
    assert len(run.paths) >= 3
    assert all(cap.read_header(p)["sess"] == 7 for p in run.paths)
    assert list(run.records()) == sent and not run.truncated


def test_a_file_cut_short_reads_up_to_the_cut(tmp_path: Path) -> None:
    """A file cut in the middle (a feed killed while writing) reads up to its cut, marked truncated."""
    sent = write_records(CaptureWriter(tmp_path, "v", 8, header(sess=8)), 3000)
    (run,) = find_runs(tmp_path)
    (path,) = run.paths
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (cut,) = find_runs(tmp_path)
    got = list(cut.records())
    assert cut.truncated
    assert 0 < len(got) < len(sent) and got == sent[: len(got)]


class FullDisk(CaptureWriter):
    """Parts after the first go to /dev/full: every write fails with ENOSPC."""

    def _open_file(self, path: Path) -> Any:
        if self._part > 1:
            return open("/dev/full", "wb")
        return super()._open_file(path)


def test_full_disk_stops_the_capture_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk is one logged error and one counted error; the capture stops, later records
    are dropped without an exception, and what was written before stays readable."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    counters: Counter[str] = Counter()
    w = FullDisk(tmp_path, "v", 3, header(sess=3), rotate_s=0.2, counters=counters)
    i = 0

    def add() -> None:
        nonlocal i
        i += 1
        w.add([cap.WS, float(i), i, "x" * 100])

    wait_until(lambda: w.error is not None, pump=add, timeout=30, what="the capture to fail")
    before = w.stats.dropped
    for _ in range(10):
        add()
    w.close()
    assert "No space left on device" in (w.error or "")
    assert counters["capture_errors"] == 1
    assert w.stats.dropped >= before + 10
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "STOPPED" in r.getMessage()]
    assert len(errors) == 1
    (run,) = find_runs(tmp_path)
    assert [r[3] for r in run.records()] == ["x" * 100] * len(list(run.records()))


def test_unwritable_capture_folder_is_a_start_up_error(tmp_path: Path) -> None:
    """A capture folder that cannot be made: the feed exits with status 2 and names the key."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "c.toml"
    write_config(cfg, symbols=SYMS, venues={"binance": binance(free_port())})
    p = subprocess.run([sys.executable, "-m", "services.feed_binance", "--venue", "binance", "--config", str(cfg),
                        "--capture", str(blocker / "cap")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: venues.binance.capture (--capture): capture folder ")
    assert "cannot write there" in last


def test_capture_config_key_is_read(tmp_path: Path) -> None:
    """``capture = "DIR"`` in [venues.<id>] turns capture on like --capture (an unmakeable
    folder shows it: exit 2 naming the key)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "c.toml"
    write_config(cfg, symbols=SYMS, venues={"binance": {**binance(free_port()), "capture": str(blocker / "cap")}})
    p = subprocess.run([sys.executable, "-m", "services.feed_binance", "--venue", "binance", "--config", str(cfg)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: venues.binance.capture (--capture): capture folder ")


def test_full_disk_while_running_leaves_the_feed_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed whose disk fills up while capturing logs and counts it once and keeps its books
    live (in-process runner against the simulator)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    from common.feed import runner as runner_mod
    from services.feed_binance.spec import SPEC

    port, ctl = free_port(), free_port()
    cfg_path = tmp_path / "c.toml"
    write_config(cfg_path, symbols=SYMS, extra=sim_section(port, ctl), venues={"binance": binance(port)})
    monkeypatch.setattr(runner_mod, "CaptureWriter", FullDisk)
    sim = SimControl(ctl)
    procs = Procs(tmp_path)
    try:
        procs.start("simulator", "services.simulator", "--config", str(cfg_path))
        wait_until(sim.up, timeout=60, what="simulator up")
        vcfg = load(cfg_path).venue("binance")
        fr = runner_mod.FeedRunner(SPEC, vcfg, capture=str(tmp_path / "cap"), capture_rotate_s=0.5)

        async def main() -> tuple[str | None, dict[str, str], int]:
            task = asyncio.create_task(fr.run())
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                await asyncio.sleep(0.05)
                if fr.capture is not None and fr.capture.error and all(
                        st.status == LIVE for st in fr.symbols.values()):
                    break
            dropped = fr.capture.stats.dropped if fr.capture else 0
            while time.monotonic() - t0 < 60 and fr.capture is not None and fr.capture.stats.dropped < dropped + 20:
                await asyncio.sleep(0.05)          # inputs still flow (dropped, not written)
            statuses = {s: st.status for s, st in fr.symbols.items()}
            fr.stop()
            await task
            return fr.capture.error if fr.capture else None, statuses, fr.counters["capture_errors"]

        error, statuses, errors = asyncio.run(main())
        assert error is not None and "No space left on device" in error
        assert statuses == {s: LIVE for s in SYMS}
        assert errors == 1
    finally:
        procs.close()


def test_capture_reader_rejects_other_files(tmp_path: Path) -> None:
    """A folder without captures, or a file that is not one, is a clear CaptureError."""
    with pytest.raises(CaptureError, match="no capture files"):
        find_runs(tmp_path)
    (tmp_path / "v.1.00001.cap.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CaptureError, match="not a capture file"):
        find_runs(tmp_path)



def test_capture_of_format_1_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """A capture made before the feed bus became positional (format 1: schema-1 bus records) is a
    CaptureError that names both formats, not a stream of bus decode errors."""
    w = CaptureWriter(tmp_path, "v", 3, {**header(sess=3), "format": 1})
    write_records(w, 3)
    with pytest.raises(CaptureError, match=r"a capture of format 1, whose bus records are feed-bus schema 1 "
                                           r"\(maps\); this version reads format 2 \(schema 2\): capture again"):
        find_runs(tmp_path)
