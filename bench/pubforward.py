"""Publisher forwarding microbenchmark: the real :class:`services.publisher.service.Publisher` drain
(recv -> checks -> fan-out, latest store, metrics) against a bare ZeroMQ forward of the same
messages (``recv_multipart`` / ``send_multipart``, no checks), in the same run.

Each round queues ``--batch`` merged-book messages (``--symbols`` symbols, contiguous ``seq``,
real-shaped payloads: 10 levels per side, two venues, depletion and freshness maps) on the
publisher's SUB socket, then times draining them through to one subscriber (a child process on
loopback TCP, so the send path does its real work). Reported per message: process CPU (this
process, ZeroMQ's I/O thread included: what the e2e bench counts as ``pub`` CPU) and wall time,
the median over ``--rounds`` rounds, for the publisher and for the bare forward.

    .venv/bin/python -m bench.pubforward [--rounds 7] [--batch 5000]

``--paced RATE``: instead, the real publisher process (``python -m services.publisher``) and the
bare relay's ``pub`` hop (bench/relay.py) side by side, fed the same stream at RATE messages/s in
bursts of ``--burst`` (as the aggregator publishes after a turn of its loop), each with one
subscriber process; ``--base DIR`` adds the publisher of another checkout (a "before") to the same
run. Reported: process CPU per message of each (all threads, from /proc) over ``--window`` s.

    .venv/bin/python -m bench.pubforward --paced 2500 [--burst 2] [--window 10] [--base /tmp/base]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import zmq

from bench.util import write_config
from common import config, schema
from common.schema import Level, MergedBook, VenueTimes


def payloads(symbols: int, per_symbol: int, seq0: int) -> list[list[bytes]]:
    """``per_symbol`` snapshots of each symbol, interleaved, seqs from ``seq0``."""
    now = time.time_ns()
    out = []
    summary = {"filled": "1", "vwap": "65001.5", "worst": "65002", "slippage_bps": "0.12", "levels": 3,
               "partial": False}
    for i in range(per_symbol):
        for s in range(symbols):
            bids = [Level(Decimal("65000.12") - Decimal(k) / 10, Decimal("0.12345678") + k,
                          "binance" if k % 2 else "bitstamp") for k in range(10)]
            asks = [Level(Decimal("65001.12") + Decimal(k) / 10, Decimal("1.2345") + k,
                          "bitstamp" if k % 2 else "binance") for k in range(10)]
            b = MergedBook(f"S{s}/USDT", 1764440000123456789, seq0 + i, now + i, Decimal("1.00"), bids, asks,
                           {"binance": "live", "bitstamp": "live"},
                           venue_ts={v: VenueTimes(now, now, now) for v in ("binance", "bitstamp")})
            out.append(schema.encode_merged(b, depletion={"buy": {"1": summary, "5": summary},
                                                          "sell": {"1": summary, "5": summary}}))
    return out


def _subscriber(endpoint: str, ready: Any) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    ready.set()
    while True:
        f = s.recv_multipart(copy=False)
        if bytes(f[0].bytes) == b"stop":
            break
    s.close(0)
    ctx.term()


def _wait_queued() -> None:
    time.sleep(0.6)   # the sender's I/O thread moves the batch into the SUB's queue meanwhile


def _timed(drain: Any, n: int, sock: zmq.Socket) -> tuple[float, float]:
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    c0, w0 = time.process_time(), time.perf_counter()
    done = 0
    while done < n:
        if not poller.poll(2000):
            raise RuntimeError(f"only {done} of {n} messages arrived")
        done += drain()
    return time.process_time() - c0, time.perf_counter() - w0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pubforward", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=5000, help="messages per round (below the SUB's HWM)")
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--paced", type=float, default=0.0, help="messages/s through the real processes (see above)")
    ap.add_argument("--burst", type=int, default=2)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--base", default="", help="a checkout whose publisher runs beside (paced mode)")
    ap.add_argument("--spy", default="", help="paced mode: py-spy the publisher into this file (raw stacks)")
    ap.add_argument("--native", action="store_true", help="with --spy: native frames too")
    a = ap.parse_args(argv)
    if a.paced:
        return paced(a)
    from services.publisher.service import Publisher

    tmp = Path(tempfile.mkdtemp(prefix="pubforward-"))
    syms = [f"S{s}/USDT" for s in range(a.symbols)]
    ep = write_config(tmp / "bookmux.toml", symbols=syms, sndhwm=100_000,
                      venues={"binance": {"kind": "binance", "ws_url": "ws://127.0.0.1:1",
                                          "rest_url": "http://127.0.0.1:1"}})
    # the latest-only endpoint on, as shipped
    with open(tmp / "bookmux.toml") as f:
        text = f.read()
    from common.ports import free_port
    text = text.replace("[publisher]\n", f"[publisher]\nlatest_port = {free_port()}\n")
    (tmp / "bookmux.toml").write_text(text)
    cfg = config.load(tmp / "bookmux.toml")
    ctx = zmq.Context()
    agg = ctx.socket(zmq.PUB)
    agg.setsockopt(zmq.SNDHWM, 0)
    agg.bind(ep["agg_pub"])
    pub = Publisher(cfg, levels=cfg.levels, ctx=ctx)
    pub.sub.setsockopt(zmq.RCVHWM, 0)
    # the bare forward: its own SUB on the same PUB and its own PUB to its own subscriber
    bare_in = ctx.socket(zmq.SUB)
    bare_in.setsockopt(zmq.RCVHWM, 0)
    bare_in.setsockopt(zmq.SUBSCRIBE, b"book.")
    bare_in.connect(ep["agg_pub"])
    bare_out = ctx.socket(zmq.XPUB)
    bare_out.setsockopt(zmq.SNDHWM, 100_000)
    bare_ep = f"tcp://127.0.0.1:{free_port()}"
    bare_out.bind(bare_ep)
    children = []
    for endpoint in (cfg.publisher.endpoint, bare_ep):
        ready = mp.Event()
        p = mp.Process(target=_subscriber, args=(endpoint, ready), daemon=True)
        p.start()
        ready.wait(10)
        children.append(p)
    time.sleep(1.0)
    while pub.out.poll(100):
        pub.on_subscription(pub.out.recv())
    while bare_out.poll(100):
        bare_out.recv()

    def bare_drain() -> int:
        n = 0
        while True:
            try:
                frames = bare_in.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            bare_out.send_multipart(frames)
            n += 1

    results: dict[str, list[tuple[float, float]]] = {"publisher": [], "bare": []}
    per = max(1, a.batch // a.symbols)
    n = per * a.symbols
    seq = 1
    for r in range(a.rounds + 1):
        msgs = payloads(a.symbols, per, seq)
        seq += per
        for m in msgs:
            agg.send_multipart(m)
        _wait_queued()
        order = [("publisher", pub.drain, pub.sub), ("bare", bare_drain, bare_in)]
        for name, drain, sock in (order if r % 2 else order[::-1]):
            cpu, wall = _timed(drain, n, sock)
            if r:   # round 0 warms up
                results[name].append((cpu, wall))
    for name, rs in results.items():
        cpu = statistics.median(c for c, _ in rs) / n * 1e6
        wall = statistics.median(w for _, w in rs) / n * 1e6
        print(f"{name:10s} {cpu:7.2f} us CPU/msg  {wall:7.2f} us wall/msg  ({len(rs)} rounds x {n} msgs)")
    pc = statistics.median(c for c, _ in results["publisher"])
    bc = statistics.median(c for c, _ in results["bare"])
    print(f"publisher / bare CPU: {pc / bc:.2f}x; publisher counters {pub.counters}")
    for s in (pub.out, bare_out):
        s.send_multipart([b"stop", b""])
    for p in children:
        p.join(5)
    pub.close()
    for s in (agg, bare_in, bare_out):
        s.close(0)
    return 0


def paced(a: argparse.Namespace) -> int:
    import os
    import subprocess
    import sys

    from bench.util import cpu_seconds
    from common.ports import free_port

    tmp = Path(tempfile.mkdtemp(prefix="pubforward-"))
    syms = [f"S{s}/USDT" for s in range(a.symbols)]
    cfg_path = tmp / "bookmux.toml"
    ep = write_config(cfg_path, symbols=syms, sndhwm=1000, venues={"binance": {
        "kind": "binance", "ws_url": "ws://127.0.0.1:1", "rest_url": "http://127.0.0.1:1"}})
    cfg_path.write_text(cfg_path.read_text().replace("[publisher]\n", f"[publisher]\nlatest_port = {free_port()}\n"))
    ctx = zmq.Context()
    agg = ctx.socket(zmq.PUB)
    agg.setsockopt(zmq.SNDHWM, 0)
    agg.bind(ep["agg_pub"])
    here = Path(__file__).resolve().parent.parent
    procs: dict[str, subprocess.Popen[bytes]] = {}
    outs: dict[str, str] = {}
    log = open(tmp / "procs.log", "wb")  # noqa: SIM115 (the children's output, closed at the end)
    pub_cmd = [sys.executable, "-m", "services.publisher", "--config", str(cfg_path)]
    procs["publisher"] = subprocess.Popen(pub_cmd, cwd=here, stdout=log, stderr=log)
    outs["publisher"] = ep["publisher"]
    if a.base:
        port = free_port()
        procs["publisher (base)"] = subprocess.Popen(
            [*pub_cmd, "--port", str(port), "--latest-port", str(free_port())], cwd=a.base, stdout=log, stderr=log,
            env={**os.environ, "PYTHONPATH": a.base})
        outs["publisher (base)"] = f"tcp://127.0.0.1:{port}"
    bare = f"tcp://127.0.0.1:{free_port()}"
    procs["bare relay pub"] = subprocess.Popen([sys.executable, "-m", "bench.relay", "pub", "--sub", ep["agg_pub"],
                                                "--pub", bare], cwd=here, stdout=log, stderr=log)
    outs["bare relay pub"] = bare
    children = []
    try:
        for endpoint in outs.values():
            ready = mp.Event()
            p = mp.Process(target=_subscriber, args=(endpoint, ready), daemon=True)
            p.start()
            ready.wait(10)
            children.append(p)
        per = a.burst
        gap = per / a.paced
        seq = 1

        def feed(seconds: float) -> int:
            nonlocal seq
            sent = 0
            end = time.monotonic() + seconds
            nxt = time.monotonic()
            msgs = payloads(a.symbols, 1, seq)
            i = 0
            while time.monotonic() < end:
                for _ in range(per):
                    if i == len(msgs):
                        seq += 1
                        msgs, i = payloads(a.symbols, 1, seq), 0
                    agg.send_multipart(msgs[i])
                    i += 1
                    sent += 1
                nxt += gap
                time.sleep(max(0.0, nxt - time.monotonic()))
            return sent

        feed(3.0)   # every process connected and subscribed
        spy = None
        if a.spy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                    str(procs["publisher"].pid), "--duration", str(int(a.window)), "--rate", "250",
                                    "--format", "raw", "--nonblocking", "--output", a.spy] + (
                                       ["--native"] if a.native else []),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c0 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
        t0 = time.monotonic()
        n = feed(a.window)
        dt = time.monotonic() - t0
        c1 = {n_: cpu_seconds(p.pid) for n_, p in procs.items()}
        if spy is not None:
            spy.wait(a.window + 30)
        print(f"paced: {n} messages in {dt:.1f} s ({n / dt:.0f}/s, bursts of {per}), {a.symbols} symbols")
        res = {}
        for name in procs:
            b, e = c0[name], c1[name]
            if b is None or e is None:
                print(f"{name:18s} exited (see {tmp / 'procs.log'})")
                continue
            res[name] = (e - b) / n * 1e6
            print(f"{name:18s} {res[name]:7.2f} us CPU/msg  ({100 * (e - b) / dt:.1f} % of a core)")
        if "bare relay pub" in res:
            for name, v in res.items():
                if name != "bare relay pub":
                    print(f"{name} / bare: {v / res['bare relay pub']:.2f}x")
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(10)
        log.close()
        for p in children:
            p.kill()
        agg.close(0)
        ctx.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
