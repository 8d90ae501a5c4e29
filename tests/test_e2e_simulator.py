"""End to end over real sockets: simulator -> both feeds -> aggregator -> publisher -> subscriber.

For every fault the simulator can inject: inject it, check the venue's status said so while its
book was not synced, then pause the market, let the pipeline settle, and compare the published
top-N with the top-N of the simulator's merged true books (after the dust filter). Recovery times
are printed (``-s``), never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.harness import Procs, SimControl, Subscriber, free_port, reference_merge, wait_until, write_config

SYMS = ["BTC/USDT", "ETH/USDT"]
N = 10
DUST = {"binance": ("0.0001", "1"), "bitstamp": ("0.0001", "1")}
STALE_AFTER = 2.0
REPORT: list[str] = []


class Pipeline:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin_port, self.bts_port, self.ctl_port = free_port(), free_port(), free_port()
        extra = (f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {self.ctl_port}\nseed = 11\nrate = 20.0\n\n'
                 f'[simulator.venues.binance]\nkind = "binance"\nport = {self.bin_port}\n\n'
                 f'[simulator.venues.bitstamp]\nkind = "bitstamp"\nport = {self.bts_port}\n')
        self.cfg = tmp / "bookmux.toml"
        self.ep = write_config(
            self.cfg, symbols=SYMS, levels=N, down_after=2.0, extra=extra,
            venues={"binance": {"kind": "binance", "ws_url": f"ws://127.0.0.1:{self.bin_port}",
                                "rest_url": f"http://127.0.0.1:{self.bin_port}", "stale_after": STALE_AFTER,
                                "dust": {s: DUST["binance"] for s in SYMS}},
                    "bitstamp": {"kind": "bitstamp", "ws_url": f"ws://127.0.0.1:{self.bts_port}",
                                 "rest_url": f"http://127.0.0.1:{self.bts_port}/api/v2",
                                 "stale_after": STALE_AFTER, "dust": {s: DUST["bitstamp"] for s in SYMS}}})
        self.sim = SimControl(self.ctl_port)
        self.ctx = zmq.Context()
        self.subs = {s: Subscriber(f"tcp://127.0.0.1:{self.ep['pub_port']}", s, self.ctx) for s in SYMS}
        self.procs = Procs(tmp)

    def start(self) -> None:
        c = str(self.cfg)
        self.procs.start("simulator", "services.simulator", "--config", c)
        wait_until(self.sim.up, timeout=30, what="simulator up")
        self.procs.start("feed_binance", "services.feed_binance", "--venue", "binance", "--config", c)
        self.procs.start("feed_bitstamp", "services.feed_bitstamp", "--venue", "bitstamp", "--config", c)
        self.procs.start("aggregator", "services.aggregator", "--config", c)
        self.procs.start("publisher", "services.publisher", "--config", c)

    def drain(self) -> None:
        for s in self.subs.values():
            s.drain(10)
            for m in s.received[-50:]:
                check_snapshot(m)

    def settled(self, symbol: str) -> bool:
        m = self.subs[symbol].last
        if m is None or set(m["venues"].values()) != {"live"}:
            return False
        truth = {v: self.sim.truth(v, symbol) for v in ("binance", "bitstamp")}
        bids, asks = reference_merge(truth, N, DUST)
        return bool(m["bids"] == bids and m["asks"] == asks)

    def diff(self, symbol: str) -> str:
        m = self.subs[symbol].last
        if m is None:
            return f"{symbol}: nothing received"
        truth = {v: self.sim.truth(v, symbol) for v in ("binance", "bitstamp")}
        bids, asks = reference_merge(truth, N, DUST)
        lines = [f"{symbol} seq {m['seq']} venues {m['venues']}"]
        for name, got, want in (("bids", m["bids"], bids), ("asks", m["asks"], asks)):
            for i, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    lines.append(f"  {name}[{i}] published {g} truth {w}")
        return "\n".join(lines)

    def all_live(self) -> bool:
        return all((m := self.subs[s].last) is not None and set(m["venues"].values()) == {"live"} for s in SYMS)

    def settle(self, what: str, timeout: float = 60) -> float:
        """With every venue live (the market running: a snapshot is proven current only by a
        later event), pause the market and wait until every published book equals the merged
        truth. If a venue leaves live while paused (a resync still under way when the market
        stopped), resume and start again: a resync needs the market to move."""
        t0 = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - t0)
            wait_until(self.all_live, timeout=max(left, 1), pump=self.drain, what=f"all venues live ({what})")
            self.sim.get("/pause")
            try:
                wait_until(lambda: all(self.settled(s) for s in SYMS) or not self.all_live(),
                           timeout=max(timeout - (time.monotonic() - t0), 1), pump=self.drain,
                           what=f"published books = simulator truth ({what})")
                if self.all_live():
                    return time.monotonic() - t0
            except AssertionError as e:
                raise AssertionError(f"{e}\n" + "\n".join(self.diff(s) for s in SYMS)) from None
            finally:
                self.sim.get("/resume")

    def close(self) -> None:
        self.procs.close()
        for s in self.subs.values():
            s.sock.close(0)
        self.ctx.term()


def check_snapshot(m: dict[str, Any]) -> None:
    """A venue that is not live never has levels in the merged book."""
    live = {v for v, st in m["venues"].items() if st == "live"}
    for lv in m["bids"] + m["asks"]:
        assert lv[2] in live, f"{lv} from a venue that is {m['venues'][lv[2]]} (seq {m['seq']})"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path_factory.mktemp("e2e"))
    try:
        p.start()
        took = p.settle("start-up", timeout=90)
        REPORT.append(f"start-up to synced and equal to truth: {took:.2f} s (after pause)")
        yield p
    finally:
        p.close()
        print("\n" + "\n".join(REPORT))


def test_startup_books_equal_truth(pipe: Pipeline) -> None:
    """Both venues live; the published top-N of both symbols equals the merged truth."""
    for s in SYMS:
        m = pipe.subs[s].last
        assert m is not None and m["venues"] == {"binance": "live", "bitstamp": "live"}
        assert len(m["bids"]) == N and len(m["asks"]) == N
        assert {lv[2] for lv in m["bids"] + m["asks"]} == {"binance", "bitstamp"}


FAULTS: list[tuple[str, str, dict[str, Any], bool]] = [
    # venue, kind, parameters, does the venue's status have to leave "live"?
    ("binance", "gap", {"symbol": "BTC/USDT"}, True),
    ("binance", "drop", {}, True),
    ("bitstamp", "drop", {}, True),
    ("binance", "silence", {"seconds": STALE_AFTER * 2}, True),
    ("bitstamp", "silence", {"seconds": STALE_AFTER * 2}, True),
    ("binance", "shutdown", {}, True),
    ("bitstamp", "shutdown", {}, True),
    ("binance", "malformed", {"count": 10}, False),
    ("bitstamp", "malformed", {"count": 10}, False),
]


@pytest.mark.parametrize("venue,kind,params,leaves_live", FAULTS, ids=[f"{v}-{k}" for v, k, _, _ in FAULTS])
def test_fault_recovers_to_truth(pipe: Pipeline, venue: str, kind: str, params: dict[str, Any],
                                 leaves_live: bool) -> None:
    """Inject the fault, see the status leave live where it must, then the books equal truth."""
    marks = {s: len(pipe.subs[s].received) for s in SYMS}
    log_mark = len(pipe.procs.log("aggregator"))
    pipe.sim.get("/fault", venue=venue, kind=kind, **params)
    t0 = time.monotonic()
    if leaves_live:
        def left_live() -> bool:
            # Seen by the subscriber, or (when the aggregator took the status change and the
            # new snapshot in one batch, so no published state ever lacked the venue's book)
            # in the aggregator's log of the feed's status messages.
            seen = any(m["venues"][venue] != "live" for s in SYMS for m in pipe.subs[s].received[marks[s]:])
            logged = pipe.procs.log("aggregator")[log_mark:]
            return seen or any(f"{venue} {s}: {st}" in logged for s in SYMS for st in ("syncing", "stale", "down"))
        wait_until(left_live, timeout=30, pump=pipe.drain, what=f"{venue} status leaving live after {kind}")
        wait_until(lambda: all(pipe.subs[s].last["venues"][venue] == "live" for s in SYMS), timeout=60,
                   pump=pipe.drain, what=f"{venue} live again after {kind}")
    back = time.monotonic() - t0
    took = pipe.settle(f"{venue} {kind}")
    REPORT.append(f"{venue:9s} {kind:10s}: live again after {back:.2f} s; settled to truth in {took:.2f} s")


@pytest.mark.parametrize("venue,kind,params", [
    ("binance", "rest_error", {"count": 2, "status": 500}),
    ("binance", "rate_limit", {"count": 1, "status": 429, "seconds": 1}),
    ("binance", "lag_snapshot", {"count": 2, "ms": 2000}),
    ("bitstamp", "rest_error", {"count": 2, "status": 503}),
    ("bitstamp", "lag_snapshot", {"count": 2, "ms": 2000}),
])
def test_rest_fault_during_resync(pipe: Pipeline, venue: str, kind: str, params: dict[str, Any]) -> None:
    """A REST fault only bites when a snapshot is fetched: arm it, then drop the connection so the
    feed resyncs through it."""
    pipe.sim.get("/fault", venue=venue, kind=kind, **params)
    t0 = time.monotonic()
    pipe.sim.get("/fault", venue=venue, kind="drop")
    time.sleep(0.5)
    wait_until(lambda: all(pipe.subs[s].last["venues"][venue] == "live" for s in SYMS), timeout=60,
               pump=pipe.drain, what=f"{venue} live again after {kind}")
    back = time.monotonic() - t0
    took = pipe.settle(f"{venue} {kind}")
    REPORT.append(f"{venue:9s} {kind:12s}+drop: live again after {back:.2f} s; settled in {took:.2f} s")


def test_feed_killed_is_down_then_back(pipe: Pipeline) -> None:
    """kill -9 of a feed process: its venue goes down (levels out); a new feed process (as
    supervisord would start) brings it back to truth."""
    pipe.procs.kill("feed_bitstamp")
    t0 = time.monotonic()
    wait_until(lambda: all(pipe.subs[s].last["venues"]["bitstamp"] == "down" for s in SYMS), timeout=30,
               pump=pipe.drain, what="bitstamp down")
    for s in SYMS:
        assert all(lv[2] == "binance" for lv in pipe.subs[s].last["bids"] + pipe.subs[s].last["asks"])
    down = time.monotonic() - t0
    pipe.procs.start("feed_bitstamp", "services.feed_bitstamp", "--venue", "bitstamp", "--config", str(pipe.cfg))
    t1 = time.monotonic()
    wait_until(lambda: all(pipe.subs[s].last["venues"]["bitstamp"] == "live" for s in SYMS), timeout=60,
               pump=pipe.drain, what="bitstamp live after restart")
    took = pipe.settle("feed restart")
    REPORT.append(f"feed kill: down after {down:.2f} s; restarted feed live after {time.monotonic() - t1:.2f} s; "
                  f"settled in {took:.2f} s")


def test_aggregator_restart_new_epoch(pipe: Pipeline) -> None:
    """kill -9 of the aggregator: a new one (new epoch) serves full books again without any
    subscriber reconnecting."""
    old = pipe.subs["BTC/USDT"].last["epoch"]
    pipe.procs.kill("aggregator")
    t0 = time.monotonic()
    pipe.procs.start("aggregator", "services.aggregator", "--config", str(pipe.cfg))
    wait_until(lambda: all(pipe.subs[s].last["epoch"] != old and set(pipe.subs[s].last["venues"].values())
                           == {"live"} for s in SYMS), timeout=60, pump=pipe.drain, what="new epoch, all live")
    back = time.monotonic() - t0
    took = pipe.settle("aggregator restart")
    REPORT.append(f"aggregator kill -9: full books in the new epoch after {back:.2f} s; settled in {took:.2f} s")
