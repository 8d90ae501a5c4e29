"""The whole bookmux pipeline (or the bare relay chain) against the simulator, as real processes on
free loopback ports, plus measuring subscribers, CPU windows and memory samples."""

from __future__ import annotations

import array
import json
import os
import time
from pathlib import Path
from typing import Any

import msgpack
import requests
import zmq

from bench.util import CpuWindow, MemSampler, Procs, free_port, latency_summary, progress, tcp, write_config

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "LTC/USDT", "DOT/USDT",
           "LINK/USDT", "AVAX/USDT", "BCH/USDT", "XLM/USDT", "UNI/USDT", "ATOM/USDT", "ETC/USDT", "FIL/USDT",
           "AAVE/USDT", "ALGO/USDT", "NEAR/USDT", "TRX/USDT"]
LIVE_RATE = 10.0            # depth frames per second per symbol per venue on the live venues
DEPLETION = {"BTC/USDT": ["1", "5", "15"], "ETH/USDT": ["10", "50"]}   # as deploy/demo.toml


def binance_key(sym: str) -> str:
    return sym.replace("/", "")


def bitstamp_key(sym: str) -> str:
    return sym.replace("/", "").lower()


_RECORDINGS: dict[tuple[float, int], tuple[float, dict[str, Path]]] = {}


def recording_for(root: Path, multiple: float, seconds: float, symbols: list[str] | None = None) -> dict[str, Path]:
    """A synthetic recording at ``multiple`` x the live rate lasting at least ``seconds`` (made once
    per run and rate, see :mod:`bench.recording`)."""
    from bench import recording

    syms = list(symbols or SYMBOLS)
    key = (multiple, len(syms))
    have = _RECORDINGS.get(key)
    if have is not None and have[0] >= seconds:
        return have[1]
    t0 = time.monotonic()
    folders = recording.write(root / f"recording_{multiple:g}x", syms, LIVE_RATE * multiple, seconds)
    progress(f"  recording {multiple:g}x, {seconds:.0f} s written in {time.monotonic() - t0:.1f} s")
    _RECORDINGS[key] = (seconds, folders)
    return folders


class Pipeline:
    """One simulator at one rate; bookmux or the bare chain started against it on demand."""

    def __init__(self, workdir: Path, multiple: float, *, split: bool = False, symbols: list[str] | None = None,
                 seed: int = 7, recording: dict[str, Path] | None = None) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.multiple = multiple
        self.rate = LIVE_RATE * multiple
        self.split = split
        self.symbols = list(symbols or SYMBOLS)
        self.bin_port, self.bts_port, self.ctl_port = free_port(), free_port(), free_port()
        bin_t = {"kind": "binance", "ws_url": f"ws://127.0.0.1:{self.bin_port}",
                 "rest_url": f"http://127.0.0.1:{self.bin_port}", "stale_after": 5.0, "depth": 5000,
                 "taker_fee": "0.001"}
        bts_t = {"kind": "bitstamp", "ws_url": f"ws://127.0.0.1:{self.bts_port}",
                 "rest_url": f"http://127.0.0.1:{self.bts_port}/api/v2", "stale_after": 10.0, "depth": 5000,
                 "taker_fee": "0.004"}
        if split:
            # Each venue's symbols over two feed processes ([[venues.<id>.shards]]): still one
            # venue id to subscribers.
            half = len(self.symbols) // 2
            a, b = self.symbols[:half], self.symbols[half:]
            venues = {v: {**t, "shards": [{"symbols": a, "pub": tcp(), "ctl": tcp()},
                                          {"symbols": b, "pub": tcp(), "ctl": tcp()}]}
                      for v, t in (("binance", bin_t), ("bitstamp", bts_t))}
        else:
            venues = {"binance": bin_t, "bitstamp": bts_t}
        self.cfg = workdir / "bookmux.toml"
        sim: dict[str, Any] = {"host": "127.0.0.1", "control_port": self.ctl_port, "seed": seed, "rate": self.rate}
        sim_venues: dict[str, dict[str, Any]] = {"binance": {"kind": "binance", "port": self.bin_port},
                                                 "bitstamp": {"kind": "bitstamp", "port": self.bts_port}}
        self.recording = recording
        if recording:
            sim.update(replay_speed=1.0, replay_gate_timeout=5.0)
            for k, f in recording.items():
                sim_venues[k]["replay"] = str(f)
        self.ep = write_config(self.cfg, symbols=self.symbols, venues=venues, depletion=DEPLETION,
                               simulator=sim, sim_venues=sim_venues)
        self.venues = venues
        self.sim = Procs(workdir / "logs")
        self.procs = Procs(workdir / "logs")
        self.mem: MemSampler | None = None
        self.ctx = zmq.Context()
        self.mode = ""

    # --- simulator ------------------------------------------------------------------------------

    def control(self, path: str) -> dict[str, Any]:
        r = requests.get(f"http://127.0.0.1:{self.ctl_port}{path}", timeout=5)
        body: dict[str, Any] = r.json()
        return body

    def start_sim(self) -> None:
        self.sim.module("simulator", "services.simulator", "--config", str(self.cfg))
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.control("/health").get("ok"):
                    return
            except (requests.RequestException, ValueError):
                pass
            if self.sim.dead() or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not come up: {self.sim.log('simulator')[-2000:]}")
            time.sleep(0.1)

    def events_sent(self) -> dict[str, int]:
        st = self.control("/stats")["venues"]
        return {v: int(d.get("events_sent", 0)) for v, d in st.items()}

    # --- bookmux --------------------------------------------------------------------------------

    def start_bookmux(self, timeout: float = 60) -> float:
        """Start feeds, aggregator and publisher; return the seconds until every symbol was
        published with every venue live."""
        self.mode = "bookmux"
        c = str(self.cfg)
        t0 = time.monotonic()
        for vid, t in self.venues.items():
            if "shards" in t:
                for i in range(len(t["shards"])):
                    self.procs.module(f"feed_{vid}_{i}", f"services.feed_{t['kind']}", "--venue", vid,
                                      "--shard", str(i), "--config", c)
            else:
                self.procs.module(f"feed_{vid}", f"services.feed_{t['kind']}", "--venue", vid, "--config", c)
        self.procs.module("aggregator", "services.aggregator", "--config", c)
        self.procs.module("publisher", "services.publisher", "--config", c)
        self.mem = MemSampler(self.procs.pids() | self.sim.pids())
        self._wait_books(lambda m: bool(m["venues"]) and set(m["venues"].values()) == {"live"}, timeout)
        return time.monotonic() - t0

    def _wait_books(self, ok: Any, timeout: float) -> None:
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"book.")
        s.connect(self.ep["publisher"])
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        try:
            while len(seen) < len(self.symbols):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not every book live after {timeout:.0f} s ({len(seen)} of "
                                       f"{len(self.symbols)}); dead: {self.procs.dead()}")
                if self.procs.dead():
                    raise RuntimeError(f"process died: {self.procs.dead()}")
                if self.mem is not None:
                    self.mem.sample()
                if s.poll(200):
                    topic, payload = s.recv_multipart()
                    m = msgpack.unpackb(payload)
                    if ok(m):
                        seen.add(m.get("symbol", topic[5:].decode()))
        finally:
            s.close(0)

    def stop_procs(self) -> None:
        self.procs.close()
        self.procs = Procs(self.dir / "logs")

    # --- bare chain -----------------------------------------------------------------------------

    def start_bare(self, feed_bytes: int, book_bytes: int, timeout: float = 30) -> None:
        self.mode = "bare"
        feed_eps = []
        for vid, t in self.venues.items():
            ep = f"tcp://127.0.0.1:{free_port()}"
            feed_eps.append(ep)
            syms = t.get("symbols", self.symbols)
            keys = [binance_key(s) if t["kind"] == "binance" else bitstamp_key(s) for s in syms]
            self.procs.module(f"feed_{vid}", "bench.relay", "feed", "--kind", t["kind"], "--venue", vid,
                              "--url", t["ws_url"], "--rest", t["rest_url"], "--keys", ",".join(keys), "--pub", ep,
                              "--pad", str(int(feed_bytes)))
        agg_ep = f"tcp://127.0.0.1:{free_port()}"
        self.procs.module("aggregator", "bench.relay", "agg", "--sub", ",".join(feed_eps), "--pub", agg_ep,
                          "--pad", str(int(book_bytes)))
        self.procs.module("publisher", "bench.relay", "pub", "--sub", agg_ep, "--pub", self.ep["publisher"])
        self.mem = MemSampler(self.procs.pids() | self.sim.pids())
        self._wait_books(lambda m: True, timeout)

    # --- measuring ------------------------------------------------------------------------------

    def measure(self, duration: float, *, warm: float = 1.5, sockets: int = 1, processes: int = 1,
                stall: int = 0, tag: str = "e2e") -> dict[str, Any]:
        """Subscribers (``sockets`` spread over ``processes``, plus ``stall`` stalled sockets in
        one more process) record latencies for ``duration`` s after ``warm`` s; the CPU of every
        process and the simulator's delivered event rate are taken over the same window."""
        start = time.time() + warm
        stop = start + duration
        subs: list[tuple[str, Path]] = []
        per = [sockets // processes + (1 if i < sockets % processes else 0) for i in range(processes)]
        for i, n in enumerate(per):
            out = self.dir / f"{tag}_{self.mode}_{i}.lat"
            name = f"sub_{tag}_{i}"
            self.procs.module(name, "bench.subscriber", "--endpoint", self.ep["publisher"], "--sockets", str(n),
                              "--start", repr(start), "--stop", repr(stop), "--out", str(out))
            subs.append((name, out))
        if stall:
            out = self.dir / f"{tag}_{self.mode}_stalled.lat"
            self.procs.module(f"sub_{tag}_stalled", "bench.subscriber", "--endpoint", self.ep["publisher"],
                              "--sockets", str(stall), "--start", repr(start), "--stop", repr(stop),
                              "--out", str(out), "--stall", "--rcvhwm", "100")
        while time.time() < start:
            if self.mem is not None:
                self.mem.sample()
            time.sleep(0.05)
        pids = self.procs.pids() | self.sim.pids() | {"bench_runner": os.getpid()}
        cpu = CpuWindow(pids)
        sent0 = self.events_sent()
        cpu.start()
        t0 = time.monotonic()
        while time.time() < stop:
            if self.mem is not None:
                self.mem.sample()
            time.sleep(0.05)
        load = cpu.stop()
        dt = time.monotonic() - t0
        sent1 = self.events_sent()
        lat = array.array("q")
        counts: list[int] = []
        mean_bytes = 0.0
        deadline = time.monotonic() + 10
        for name, out in subs:
            p = self.procs.procs[name]
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                with open(out, "rb") as f:
                    lat.frombytes(f.read())
                meta = json.loads(Path(str(out) + ".json").read_text())
            except (OSError, ValueError) as e:
                raise RuntimeError(f"subscriber {name} wrote no result: {e}; {self.procs.log(name)[-1500:]}") from None
            counts += meta["per_socket"]
            mean_bytes = meta["mean_bytes"] or mean_bytes
            self.procs.stop(name)
        if stall:
            self.procs.stop(f"sub_{tag}_stalled")
        dead = self.procs.dead()
        if dead:
            raise RuntimeError(f"process died during the measurement: {dead}")
        events = sum(sent1.values()) - sum(sent0.values())
        res = latency_summary(lat)
        res.update(cpu=load, events_per_s=round(events / dt, 1),
                   nominal_events_per_s=round(self.rate * len(self.symbols) * 2, 1),
                   snapshots_per_s=round(len(lat) / duration, 1), mean_bytes=round(mean_bytes, 1),
                   sockets=sockets, min_socket_count=min(counts) if counts else 0)
        progress(f"  {self.mode} {self.multiple:g}x {tag}: p50 {res.get('p50_us')} us, p99 {res.get('p99_us')} us, "
                 f"{res['events_per_s']:.0f} ev/s in, {res['snapshots_per_s']:.0f} snap/s out, cpu {load}")
        return res

    def close(self) -> None:
        self.procs.close()
        self.sim.close()
        self.ctx.term()
