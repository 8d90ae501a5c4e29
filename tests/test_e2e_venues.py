"""End to end over real sockets for every venue API the feeds speak: the simulator (its own wire
code, not the feed parsers) -> the venue's feed process -> aggregator -> publisher -> subscriber.

For each venue fault (a wrong checksum, a skipped sequence number, a dropped connection after which
a level removed meanwhile must not survive, malformed frames, maintenance...): inject it, see the
venue's status leave ``live`` where it must, and check that no level of a non-live venue was ever
published (every snapshot received is checked); then pause the market and wait until the published
top-N equals the merged top-N of the simulator's true books. Recovery times are printed (``-s``),
never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import SimPipeline, wait_until

SYMS = ["BTC/USD", "BTC/USDT"]
REPORT: list[str] = []

#: Pipelines: the live APIs together, and the configured alternatives together.
SETUPS: dict[str, dict[str, dict[str, Any]]] = {
    "live": {"kraken": {"kind": "kraken", "api": "v2", "depth": 25},
             "coinbase": {"kind": "coinbase", "api": "advanced"},
             "gemini": {"kind": "gemini", "api": "ws"}},
    "alternative": {"kraken": {"kind": "kraken", "api": "v1", "depth": 25},
                    "coinbase": {"kind": "coinbase", "api": "exchange"},
                    "gemini": {"kind": "gemini", "api": "v2"}},
}

#: (setup, venue, fault kind, parameters, must the venue's status leave live?)
Fault = tuple[str, str, str, dict[str, Any], bool]
FAULTS: list[Fault] = [
    ("live", "kraken", "bad_checksum", {"symbol": "BTC/USD"}, True),
    ("live", "kraken", "drop", {}, True),
    ("live", "kraken", "malformed", {"count": 5}, False),
    ("live", "coinbase", "skip_seq", {"count": 1}, True),
    ("live", "coinbase", "drop", {}, True),
    ("live", "coinbase", "malformed", {"count": 5}, False),
    ("live", "gemini", "drop", {}, True),
    ("live", "gemini", "gap", {"symbol": "BTC/USD"}, True),
    ("live", "gemini", "malformed", {"count": 5}, False),
    ("alternative", "kraken", "bad_checksum", {"symbol": "BTC/USDT"}, True),
    ("alternative", "kraken", "drop", {}, True),
    ("alternative", "coinbase", "drop", {}, True),
    ("alternative", "coinbase", "crossed", {"symbol": "BTC/USD"}, True),
    ("alternative", "gemini", "drop", {}, True),
    # v2 marks its initial book (trades/auction_events): one that never comes times out -> reconnect
    ("alternative", "gemini", "no_initial_book", {"count": 1, "then": "drop"}, True),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each class runs the faults of its own pipeline."""
    if "fault" in metafunc.fixturenames and metafunc.cls is not None:
        mine = [f for f in FAULTS if f[0] == metafunc.cls.SETUP]
        metafunc.parametrize("fault", mine, ids=[f"{v}-{k}" for _, v, k, _, _ in mine])


@pytest.fixture(scope="class")
def pipe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimPipeline]:
    setup = request.cls.SETUP
    p = SimPipeline(tmp_path_factory.mktemp(f"e2e-{setup}"), SETUPS[setup], SYMS)
    try:
        p.start()
        took = p.settle("start-up", timeout=90)
        REPORT.append(f"[{setup}] start-up to synced and equal to truth: {took:.2f} s")
        yield p
    finally:
        p.close()
        print("\n" + "\n".join(REPORT))


class _Venues:
    """The tests of one pipeline (the ``pipe`` fixture: started once per class, closed after its
    last test)."""

    SETUP = ""

    def test_startup_books_equal_truth(self, pipe: SimPipeline) -> None:
        """Every venue live in one snapshot of each symbol; the top-N equals the merged truth."""
        for s in SYMS:
            m = pipe.subs[s].last
            assert m is not None and m["venues"] == dict.fromkeys(pipe.venues, "live")
            assert {lv[2] for lv in m["bids"] + m["asks"]} <= set(pipe.venues)

    def test_fault_recovers_to_truth(self, pipe: SimPipeline, fault: Fault) -> None:
        """Inject the fault; the venue's status leaves live where it must; then books equal truth."""
        setup, venue, kind, params, leaves_live = fault
        recover(pipe, setup, venue, kind, params, leaves_live)

    def test_kraken_maintenance_down_then_exact_again(self, pipe: SimPipeline) -> None:
        """Kraken's system status ``maintenance``: the venue goes ``down`` (levels out) while the
        other venues stay live; ``cancel_only`` keeps it live and says so in ``venue_modes``;
        ``online`` brings it back exact."""
        maintenance(pipe, self.SETUP)


class TestLiveApis(_Venues):
    """Kraken v2, Coinbase Advanced Trade, Gemini's current API."""

    SETUP = "live"


class TestAlternativeApis(_Venues):
    """Kraken v1, Coinbase Exchange, Gemini market data v2."""

    SETUP = "alternative"


def recover(pipe: SimPipeline, setup: str, venue: str, kind: str, params: dict[str, Any], leaves_live: bool) -> None:
    marks = pipe.marks()
    log_mark = len(pipe.procs.log("aggregator"))
    params = dict(params)
    then = params.pop("then", None)
    pipe.sim.get("/fault", venue=venue, kind=kind, **params)
    if then is not None:        # arm a fault, then make it bite (e.g. the next subscription's book)
        pipe.sim.get("/fault", venue=venue, kind=then)
    t0 = time.monotonic()
    if leaves_live:
        def left_live() -> bool:
            logged = pipe.procs.log("aggregator")[log_mark:]
            return (pipe.statuses_since(marks, venue) != {"live"}
                    or any(f"{venue} {s}: {st}" in logged for s in SYMS for st in ("syncing", "stale", "down")))
        wait_until(left_live, timeout=30, pump=pipe.drain, what=f"{venue} status leaving live after {kind}")
        wait_until(lambda: all(pipe.subs[s].last["venues"][venue] == "live" for s in SYMS), timeout=60,
                   pump=pipe.drain, what=f"{venue} live again after {kind}")
    back = time.monotonic() - t0
    took = pipe.settle(f"{venue} {kind}")
    kind = kind if then is None else f"{kind}+{then}"
    REPORT.append(f"[{setup}] {venue:9s} {kind:12s}: live again after {back:.2f} s; settled to truth in {took:.2f} s")


def maintenance(pipe: SimPipeline, setup: str) -> None:
    marks = pipe.marks()
    pipe.sim.get("/fault", venue="kraken", kind="status", system="maintenance")
    t0 = time.monotonic()
    wait_until(lambda: all(pipe.subs[s].last["venues"]["kraken"] == "down" for s in SYMS), timeout=30,
               pump=pipe.drain, what="kraken down in maintenance")
    down = time.monotonic() - t0
    assert all(pipe.subs[s].last["venues"][v] == "live" for s in SYMS for v in pipe.venues if v != "kraken")
    assert {v for s in SYMS for m in pipe.subs[s].received[marks[s]:] for v in m["venues"]
            if m["venues"][v] != "live"} == {"kraken"}
    pipe.sim.get("/fault", venue="kraken", kind="status", system="cancel_only")
    t1 = time.monotonic()
    wait_until(lambda: all(pipe.subs[s].last["venues"]["kraken"] == "live"
                           and pipe.subs[s].last.get("venue_modes", {}).get("kraken") == "cancel_only"
                           for s in SYMS), timeout=60, pump=pipe.drain, what="kraken live, cancel_only")
    back = time.monotonic() - t1
    pipe.settle("kraken cancel_only")
    pipe.sim.get("/fault", venue="kraken", kind="status", system="online")
    wait_until(lambda: all(pipe.subs[s].last.get("venue_modes", {}).get("kraken") == "online" for s in SYMS),
               timeout=30, pump=pipe.drain, what="kraken online")
    took = pipe.settle("kraken online")
    REPORT.append(f"[{setup}] kraken maintenance: down after {down:.2f} s; cancel_only live after "
                  f"{back:.2f} s; online settled in {took:.2f} s")
