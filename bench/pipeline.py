"""The whole bookmux pipeline (or the bare relay chain) against the simulator, as real processes on
free loopback ports, plus measuring subscribers, CPU windows and memory samples.

One :class:`Pipeline` is one simulator replaying one synthetic recording per venue
(:mod:`bench.recording`: every venue id is its kind, speaking :data:`bench.recording.API`), and
bookmux (from this tree, or from another revision's tree: ``root``), or the bare relay chain,
started against it on demand."""

from __future__ import annotations

import array
import itertools
import json
import os
import string
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import requests
import zmq

from bench.util import REPO, CpuWindow, MemSampler, Procs, free_port, latency_summary, progress, tcp, write_config

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "LTC/USDT", "DOT/USDT",
           "LINK/USDT", "AVAX/USDT", "BCH/USDT", "XLM/USDT", "UNI/USDT", "ATOM/USDT", "ETC/USDT", "FIL/USDT",
           "AAVE/USDT", "ALGO/USDT", "NEAR/USDT", "TRX/USDT"]
KINDS = ("binance", "bitstamp", "kraken", "coinbase", "gemini")
LIVE_RATE = 10.0            # depth frames per second per symbol per venue on the live venues
DEPLETION = {"BTC/USDT": ["1", "5", "15"], "ETH/USDT": ["10", "50"]}   # as deploy/demo.toml
DUST = ("0.00001", "1")     # bench/util.write_config's "*" dust of every venue
LEVELS = 10


def symbols(n: int) -> list[str]:
    """``n`` symbols: the 20 real ones first, then synthetic ``QAAA/USDT``, ``QAAB/USDT``... (the
    simulator's spec_for gives any name a price and tick)."""
    extra = ("Q" + "".join(t) + "/USDT" for t in itertools.product(string.ascii_uppercase, repeat=3))
    return (SYMBOLS + list(itertools.islice(extra, max(0, n - len(SYMBOLS)))))[:n]


def venue_key(kind: str, sym: str) -> str:
    """The subscription key of ``sym`` on ``kind``'s replayed API (what the relay feed subscribes)."""
    if kind == "binance":
        return sym.replace("/", "")
    if kind == "bitstamp":
        return sym.replace("/", "").lower()
    if kind == "kraken":
        from bench.recording import API

        if API[kind] == "v2":
            return sym
        base, quote = sym.split("/")
        alias = {"BTC": "XBT", "DOGE": "XDG"}
        return f"{alias.get(base, base)}/{quote}"
    if kind == "coinbase":
        return sym.replace("/", "-")
    from bench.recording import API

    return sym.replace("/", "").upper() if API[kind] == "v2" else sym.replace("/", "").lower()


def venue_table(kind: str, port: int) -> dict[str, Any]:
    """``[venues.<kind>]`` against the replay of ``kind`` on ``port`` (only keys the base revision knows)."""
    from bench.recording import API, KRAKEN_DEPTH

    ws = f"ws://127.0.0.1:{port}" + ("/v2/marketdata" if kind == "gemini" and API[kind] == "v2" else
                                     "/v2" if kind == "kraken" and API[kind] == "v2" else "")
    rest = f"http://127.0.0.1:{port}" + ("/api/v2" if kind == "bitstamp" else "")
    fee = {"binance": "0.001", "bitstamp": "0.004", "kraken": "0.0026", "coinbase": "0.006", "gemini": "0.004"}
    t: dict[str, Any] = {"kind": kind, "api": API[kind], "ws_url": ws, "rest_url": rest, "stale_after": 10.0,
                         "depth": KRAKEN_DEPTH if kind == "kraken" else 5000, "taker_fee": fee[kind]}
    return t


_RECORDINGS: dict[tuple[float, int, tuple[str, ...]], tuple[float, dict[str, Path]]] = {}


def recording_for(root: Path, multiple: float, seconds: float, syms: list[str] | None = None,
                  kinds: tuple[str, ...] = KINDS) -> dict[str, Path]:
    """A synthetic recording at ``multiple`` x the live rate lasting at least ``seconds`` (made once
    per run, rate, symbol count and venues, see :mod:`bench.recording`)."""
    from bench import recording

    syms = list(syms or SYMBOLS)
    key = (multiple, len(syms), kinds)
    have = _RECORDINGS.get(key)
    if have is not None and have[0] >= seconds:
        return have[1]
    t0 = time.monotonic()
    folders = recording.write(root / f"recording_{multiple:g}x_{len(syms)}s_{len(kinds)}v", syms,
                              LIVE_RATE * multiple, seconds, kinds=kinds)
    progress(f"  recording {multiple:g}x, {len(kinds)} venues x {len(syms)} symbols, {seconds:.0f} s written in "
             f"{time.monotonic() - t0:.1f} s")
    _RECORDINGS[key] = (seconds, folders)
    return folders


def scrape(hostport: str, prefix: str) -> float:
    """Sum of the Prometheus samples whose name starts with ``prefix`` at ``hostport``/metrics
    (NaN when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://{hostport}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix) and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name.endswith("_created"):
                continue
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


def _canon(d: Decimal) -> str:
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def reference_top(books: dict[str, tuple[list[list[str]], list[list[str]]]], n: int,
                  ) -> tuple[list[list[str]], list[list[str]]]:
    """Top-``n`` merged levels of venue books (text), independent of the aggregator: dust out,
    sort by price, then larger amount, then venue; canonical text."""
    min_amount, min_notional = (Decimal(x) for x in DUST)
    out: list[list[tuple[Decimal, Decimal, str]]] = [[], []]
    for venue, sides in books.items():
        for i, side in enumerate(sides):
            for p, q in side:
                price, qty = Decimal(p), Decimal(q)
                if qty > 0 and qty >= min_amount and price * qty >= min_notional:
                    out[i].append((price, qty, venue))
    out[0].sort(key=lambda x: (-x[0], -x[1], x[2]))
    out[1].sort(key=lambda x: (x[0], -x[1], x[2]))
    return ([[_canon(p), _canon(q), v] for p, q, v in out[0][:n]],
            [[_canon(p), _canon(q), v] for p, q, v in out[1][:n]])


class Pipeline:
    """One simulator at one rate; bookmux or the bare chain started against it on demand.

    ``root``: the source tree bookmux runs from (another revision: cwd and PYTHONPATH there, the
    same venv). ``agg_shards``: split the symbols over that many ``[[aggregator.shards]]``."""

    def __init__(self, workdir: Path, multiple: float, *, split: bool = False, symbols: list[str] | None = None,
                 kinds: tuple[str, ...] = KINDS, seed: int = 7, recording: dict[str, Path] | None = None,
                 root: Path = REPO, agg_shards: int = 0, metrics: bool = True) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.multiple = multiple
        self.rate = LIVE_RATE * multiple
        self.split = split
        self.symbols = list(symbols or SYMBOLS)
        self.kinds = kinds
        self.root = root
        self.ports = {k: free_port() for k in kinds}
        self.ctl_port = free_port()
        tables = {k: venue_table(k, self.ports[k]) for k in kinds}
        if split:
            # Each venue's symbols over two feed processes ([[venues.<id>.shards]]): still one
            # venue id to subscribers.
            half = len(self.symbols) // 2
            a, b = self.symbols[:half], self.symbols[half:]
            venues = {v: {**t, "shards": [{"symbols": a, "pub": tcp(), "ctl": tcp()},
                                          {"symbols": b, "pub": tcp(), "ctl": tcp()}]}
                      for v, t in tables.items()}
        else:
            venues = tables
        self.cfg = workdir / "bookmux.toml"
        sim: dict[str, Any] = {"host": "127.0.0.1", "control_port": self.ctl_port, "seed": seed, "rate": self.rate}
        sim_venues: dict[str, dict[str, Any]] = {k: {"kind": k, "port": self.ports[k]} for k in kinds}
        self.recording = recording
        if recording:
            sim.update(replay_speed=1.0, replay_gate_timeout=5.0)
            for k, f in recording.items():
                if k in sim_venues:
                    sim_venues[k]["replay"] = str(f)
        shards = [self.symbols[i::agg_shards] for i in range(agg_shards)] if agg_shards else []
        self.ep = write_config(self.cfg, symbols=self.symbols, venues=venues, depletion=DEPLETION,
                               simulator=sim, sim_venues=sim_venues, metrics=metrics, agg_shards=shards,
                               levels=LEVELS)
        self.venues = venues
        self.sim = Procs(workdir / "logs")
        self.procs = Procs(workdir / "logs", root=root)
        self.tools = Procs(workdir / "logs")
        self.mem: MemSampler | None = None
        self.ctx = zmq.Context()
        self.mode = ""

    @property
    def nominal(self) -> float:
        """Events per second the recording carries (every venue, every symbol)."""
        return self.rate * len(self.symbols) * len(self.kinds)

    # --- simulator ------------------------------------------------------------------------------

    def control(self, path: str, **params: Any) -> dict[str, Any]:
        r = requests.get(f"http://127.0.0.1:{self.ctl_port}{path}", params=params, timeout=10)
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

    def start_bookmux(self, timeout: float = 90) -> float:
        """Start feeds, aggregator(s) and publisher; return the seconds until every symbol was
        published with every venue live."""
        self.mode = "bookmux" if self.root == REPO else "before"
        c = str(self.cfg)
        t0 = time.monotonic()
        for vid, t in self.venues.items():
            if "shards" in t:
                for i in range(len(t["shards"])):
                    self.procs.module(f"feed_{vid}_{i}", f"services.feed_{t['kind']}", "--venue", vid,
                                      "--shard", str(i), "--config", c)
            else:
                self.procs.module(f"feed_{vid}", f"services.feed_{t['kind']}", "--venue", vid, "--config", c)
        if self.ep["shards"]:
            for i in range(len(self.ep["shards"])):
                self.procs.module(f"aggregator_{i}", "services.aggregator", "--config", c, "--shard", str(i))
        else:
            self.procs.module("aggregator", "services.aggregator", "--config", c)
        self.procs.module("publisher", "services.publisher", "--config", c)
        self.mem = MemSampler(self.procs.pids() | self.sim.pids())
        self._wait_books(lambda m: bool(m["venues"]) and len(m["venues"]) == len(self.kinds)
                         and set(m["venues"].values()) == {"live"}, timeout)
        return time.monotonic() - t0

    def _wait_books(self, ok: Any, timeout: float) -> None:
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"book.")
        s.connect(self.ep["publisher"])
        seen: set[str] = set()
        last: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(seen) < len(self.symbols):
                if time.monotonic() > deadline:
                    states: dict[str, int] = {}
                    for m in last.values():
                        for v, st in (m.get("venues") or {}).items():
                            if st != "live":
                                states[f"{v}:{st}"] = states.get(f"{v}:{st}", 0) + 1
                    raise RuntimeError(f"not every book live after {timeout:.0f} s ({len(seen)} of "
                                       f"{len(self.symbols)}; not live: {states}); dead: {self.procs.dead()}")
                if self.procs.dead():
                    raise RuntimeError(f"process died: {self.procs.dead()}")
                if self.mem is not None:
                    self.mem.sample()
                if s.poll(200):
                    topic, payload = s.recv_multipart()
                    m = msgpack.unpackb(payload)
                    sym = m.get("symbol", topic[5:].decode()) if isinstance(m, dict) else topic[5:].decode()
                    last[sym] = m
                    if ok(m):
                        seen.add(sym)
        finally:
            s.close(0)

    def bus_gaps(self) -> float:
        """The aggregator(s)' ``bookmux_aggregator_gaps`` counters (NaN without metrics)."""
        names = [n for n in self.ep["metrics"] if n.startswith("aggregator")]
        return sum(scrape(self.ep["metrics"][n], "bookmux_aggregator_gaps") for n in names) if names else float("nan")

    def feed_counters(self) -> dict[str, float]:
        """The feeds' checksum failures, resyncs, gaps and drops so far (their metrics endpoints)."""
        out: dict[str, float] = {}
        for name in ("checksum_failures", "resyncs", "gaps", "drops"):
            out[name] = sum(scrape(hp, f"bookmux_feed_{name}") for n, hp in self.ep["metrics"].items()
                            if n.startswith("feed_"))
        return out

    def check_books(self, syms: list[str], settle: float = 1.0, timeout: float = 60.0) -> dict[str, Any]:
        """Once the replay has sent its last frame (``events_sent`` still for ``settle`` s), compare
        each of ``syms``' published top-N (a fresh subscriber's republished snapshot) with the merge
        of the simulator's ``/book`` truths. Returns {"checked", "mismatches": [..]}."""
        deadline = time.monotonic() + timeout
        prev, still = -1, time.monotonic()
        while True:
            n = sum(self.events_sent().values())
            if n != prev:
                prev, still = n, time.monotonic()
            elif time.monotonic() - still >= settle:
                break
            if time.monotonic() > deadline:
                return {"checked": 0, "mismatches": [f"the replay did not finish within {timeout:.0f} s"]}
            time.sleep(0.2)
        time.sleep(0.5)
        out: dict[str, Any] = {"checked": 0, "mismatches": []}
        for sym in syms:
            truth = {k: tuple(self.control("/book", venue=k, symbol=sym)[side] for side in ("bids", "asks"))
                     for k in self.kinds}
            bids, asks = reference_top(truth, LEVELS)   # type: ignore[arg-type]
            s = self.ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SUBSCRIBE, f"book.{sym}".encode())
            s.connect(self.ep["publisher"])
            m = None
            try:
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    if s.poll(500):
                        topic, payload = s.recv_multipart()
                        if topic == f"book.{sym}".encode():
                            m = msgpack.unpackb(payload)
                            break
            finally:
                s.close(0)
            out["checked"] += 1
            if m is None:
                out["mismatches"].append(f"{sym}: no snapshot")
                continue
            got = ([list(x) for x in m["bids"]], [list(x) for x in m["asks"]])
            if got != (bids, asks):
                diff = [f"{name}[{i}] {g} != {w}" for name, gs, ws in (("bids", got[0], bids), ("asks", got[1], asks))
                        for i, (g, w) in enumerate(itertools.zip_longest(gs, ws)) if g != w][:3]
                out["mismatches"].append(f"{sym} ({m.get('venues')}): {'; '.join(diff)}")
        return out

    def stop_procs(self, root: Path | None = None) -> None:
        """Stop bookmux (or the bare chain); the next :meth:`start_bookmux` runs from ``root``
        (default: the same tree as before)."""
        self.procs.close()
        self.tools.close()
        self.root = root or self.root
        self.procs = Procs(self.dir / "logs" / ("before" if self.root != REPO else ""), root=self.root)
        self.tools = Procs(self.dir / "logs")

    # --- bare chain -----------------------------------------------------------------------------

    def start_bare(self, feed_bytes: int, book_bytes: int, timeout: float = 60) -> None:
        """One relay feed per venue (its venue's subscribe protocol), one relay aggregator, one relay
        publisher: the hops bookmux has, doing nothing but moving bytes (bench/relay.py)."""
        self.mode = "bare"
        feed_eps = []
        for vid, t in self.venues.items():
            ep = f"tcp://127.0.0.1:{free_port()}"
            feed_eps.append(ep)
            keys = [venue_key(t["kind"], s) for s in self.symbols]
            self.tools.module(f"feed_{vid}", "bench.relay", "feed", "--kind", t["kind"], "--api", t["api"],
                              "--venue", vid,
                              "--url", t["ws_url"], "--rest", t["rest_url"], "--keys", ",".join(keys), "--pub", ep,
                              "--pad", str(int(feed_bytes)))
        agg_ep = f"tcp://127.0.0.1:{free_port()}"
        self.tools.module("aggregator", "bench.relay", "agg", "--sub", ",".join(feed_eps), "--pub", agg_ep,
                          "--pad", str(int(book_bytes)))
        self.tools.module("publisher", "bench.relay", "pub", "--sub", agg_ep, "--pub", self.ep["publisher"])
        self.mem = MemSampler(self.tools.pids() | self.sim.pids())
        self._wait_books(lambda m: True, timeout)

    # --- measuring ------------------------------------------------------------------------------

    def measure(self, duration: float, *, warm: float = 1.5, sockets: int = 1, processes: int = 1,
                stall: int = 0, tag: str = "e2e") -> dict[str, Any]:
        """Subscribers (``sockets`` spread over ``processes``, plus ``stall`` stalled sockets in
        one more process) record latencies for ``duration`` s after ``warm`` s; the CPU of every
        process, the simulator's delivered events and the aggregator's bus gaps are taken over the
        same window. Subscribers also count per-symbol ``seq`` gaps and the longest an input was
        held before a snapshot carried it (see bench/subscriber.py)."""
        start = time.time() + warm
        stop = start + duration
        subs: list[tuple[str, Path]] = []
        per = [sockets // processes + (1 if i < sockets % processes else 0) for i in range(processes)]
        for i, n in enumerate(per):
            out = self.dir / f"{tag}_{self.mode}_{i}.lat"
            name = f"sub_{tag}_{i}"
            self.tools.module(name, "bench.subscriber", "--endpoint", self.ep["publisher"], "--sockets", str(n),
                              "--start", repr(start), "--stop", repr(stop), "--out", str(out))
            subs.append((name, out))
        if stall:
            out = self.dir / f"{tag}_{self.mode}_stalled.lat"
            self.tools.module(f"sub_{tag}_stalled", "bench.subscriber", "--endpoint", self.ep["publisher"],
                              "--sockets", str(stall), "--start", repr(start), "--stop", repr(stop),
                              "--out", str(out), "--stall", "--rcvhwm", "100")
        while time.time() < start:
            if self.mem is not None:
                self.mem.sample()
            time.sleep(0.05)
        pids = self.procs.pids() | self.tools.pids() | self.sim.pids() | {"bench_runner": os.getpid()}
        cpu = CpuWindow(pids)
        sent0 = self.events_sent()
        gaps0 = self.bus_gaps() if self.mode != "bare" else float("nan")
        cpu.start()
        t0 = time.monotonic()
        while time.time() < stop:
            if self.mem is not None:
                self.mem.sample()
            time.sleep(0.05)
        load, cpu_s = cpu.stop_seconds()
        dt = time.monotonic() - t0
        sent1 = self.events_sent()
        gaps1 = self.bus_gaps() if self.mode != "bare" else float("nan")
        lat = array.array("q")
        counts: list[int] = []
        mean_bytes = 0.0
        seq_gaps = 0
        max_hold_ms = 0.0
        deadline = time.monotonic() + 15
        for name, out in subs:
            p = self.tools.procs[name]
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                with open(out, "rb") as f:
                    lat.frombytes(f.read())
                meta = json.loads(Path(str(out) + ".json").read_text())
            except (OSError, ValueError) as e:
                raise RuntimeError(f"subscriber {name} wrote no result: {e}; {self.tools.log(name)[-1500:]}") from None
            counts += meta["per_socket"]
            mean_bytes = meta["mean_bytes"] or mean_bytes
            seq_gaps += int(meta.get("seq_gaps", 0))
            max_hold_ms = max(max_hold_ms, float(meta.get("max_hold_ms", 0.0)))
            self.tools.stop(name)
        if stall:
            self.tools.stop(f"sub_{tag}_stalled")
        dead = self.procs.dead() + self.tools.dead()
        if dead:
            raise RuntimeError(f"process died during the measurement: {dead}")
        events = sum(sent1.values()) - sum(sent0.values())
        res = latency_summary(lat)
        ours = sum(v for k, v in cpu_s.items() if k.startswith(("feed_", "aggregator", "publisher")))
        res.update(cpu=load, cpu_seconds=cpu_s, window_s=round(dt, 2), events=events,
                   events_per_s=round(events / dt, 1), nominal_events_per_s=round(self.nominal, 1),
                   per_venue_events={k: sent1.get(k, 0) - sent0.get(k, 0) for k in sent1},
                   cpu_us_per_frame=round(1e6 * ours / events, 1) if events else None,
                   snapshots_per_s=round(len(lat) / duration, 1), mean_bytes=round(mean_bytes, 1),
                   sockets=sockets, min_socket_count=min(counts) if counts else 0, seq_gaps=seq_gaps,
                   max_hold_ms=round(max_hold_ms, 1), bus_gaps=gaps1 - gaps0,
                   streams=len(self.symbols) * len(self.kinds))
        progress(f"  {self.mode} {self.multiple:g}x {tag}: p50 {res.get('p50_us')} us, p99 {res.get('p99_us')} us, "
                 f"{res['events_per_s']:.0f}/{self.nominal:.0f} ev/s in, {res['snapshots_per_s']:.0f} snap/s out, "
                 f"{res['cpu_us_per_frame']} us CPU/frame, seq gaps {seq_gaps}, bus gaps {res['bus_gaps']}, "
                 f"hold {res['max_hold_ms']} ms, cpu {load}")
        return res

    def close(self) -> None:
        self.procs.close()
        self.tools.close()
        self.sim.close()
        self.ctx.term()
