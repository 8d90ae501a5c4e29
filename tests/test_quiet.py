"""quiet_after: a symbol whose book stops changing inside a live connection goes ``stale`` and is
resynced, within a per-venue budget. In-process with an injected clock (the toy venues of
tests/test_feed_core.py and a toy REST venue here), then end to end against the simulator's
``silence_symbol`` fault."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import zmq

from common import config, schema
from common.config import ConfigError, VenueConfig
from common.feed.actions import Fetch, Reconnect, Send
from common.feed.core import FeedCore
from common.feed.quiet import TokenBucket
from common.feed.runner import resolve_options
from common.feed.spec import RECONNECT, REST, FeedSpec
from common.feed.types import DepthEvent, Frame, Snapshot
from common.schema import DELTA, LIVE, SNAP, STALE, SYNCING, BookMsg, FeedMsg, StatusMsg
from services.feed_binance.sync import BinanceSequencer
from tests import test_simulator as tsim
from tests import test_simulator_coinbase as tsim_cb
from tests.harness import REPO, SimPipeline, wait_until
from tests.test_feed_core import Wire, snap, spec

D = Decimal
SYMS = ("BTC/USD", "ETH/USD")


def venue_cfg(**kw: Any) -> VenueConfig:
    """The toy venue's config with ``quiet_after`` / ``quiet_after_symbols`` / options."""
    base = VenueConfig(id="toy", kind="binance", enabled=True, symbols=SYMS, ws_url="ws://x",
                       rest_url="http://x", pub="inproc://p", ctl="inproc://c", stale_after=5.0, depth=3,
                       taker_fee=D(0), cpu=None)
    return dataclasses.replace(base, **kw)


def core_for(sp: FeedSpec, **kw: Any) -> FeedCore:
    cfg = venue_cfg(**kw)
    c = FeedCore(sp, cfg, resolve_options(sp, cfg), sess=1)
    c.start(0)
    c.take_bus()
    return c


def bus(c: FeedCore) -> list[tuple[str, str, str]]:
    """The bus messages as (symbol, kind or status, first words of the reason)."""
    c.flush()
    out = []
    for m in c.take_bus():
        if isinstance(m, StatusMsg):
            out.append((m.symbol, m.status, m.reason.split(";")[0]))
        elif isinstance(m, BookMsg):
            out.append((m.symbol, m.kind, ""))
    return out


def upd(k: str, price: str, qty: str) -> dict[str, Any]:
    return {"t": "upd", "k": k, "b": [[price, qty]]}


def live_pair(c: FeedCore, w: Wire, t: float) -> None:
    """Connect at ``t`` and make both toy symbols live from their in-band snapshots."""
    c.connected(t, 1)
    c.take_actions()
    c.frame(w(snap("BTCUSD", [["10", "1"]], [["11", "1"]]), snap("ETHUSD", [["2", "1"]], [["3", "1"]])), 2, t)
    assert bus(c) == [("BTC/USD", SNAP, ""), ("ETH/USD", SNAP, "")]


def test_token_bucket_sequence() -> None:
    """Full at first use; one token per 1/rate s after that; never above capacity."""
    b = TokenBucket(2, 0.5)
    assert [b.take(0.0), b.take(0.0), b.take(0.0)] == [True, True, False]
    assert b.wait(0.0) == 2.0 and b.wait(1.0) == 1.0
    assert [b.take(1.9), b.take(2.0), b.take(2.0)] == [False, True, False]
    assert [b.take(100.0), b.take(100.0), b.take(100.0)] == [True, True, False]
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)


def test_quiet_symbol_goes_stale_resubscribes_and_comes_back_live() -> None:
    """BTC unchanged for quiet_after -> stale, resubscribe, live on its new book; ETH, updating, stays live."""
    sp = spec(checksum=None, conn_seq=False)
    c = core_for(sp, quiet_after=2.0)
    w = Wire()
    live_pair(c, w, 0.0)
    for i in range(1, 9):                   # ETH changes every 0.5 s; BTC never
        t = i * 0.5
        c.frame(w(upd("ETHUSD", "2", str(i + 1))), 3, t)
        c.flush()                           # as the transport does once the frame is handled
        c.tick(t, 3)
    # t = 2.0: BTC unchanged for exactly quiet_after (not more): still live. t = 2.5: stale.
    out = bus(c)
    assert [m for m in out if m[0] == "BTC/USD"] == [
        ("BTC/USD", STALE, "book unchanged for 2.5 s (quiet_after 2 s)"),
        ("BTC/USD", SYNCING, "quiet for 2 s: resync (resubscribe)")]
    assert [m for m in out if m[0] == "ETH/USD"] == [("ETH/USD", DELTA, "")] * 8
    assert c.take_actions() == [Send(["unsub BTCUSD", "sub BTCUSD"])]
    assert c.streams["BTC/USD"].book.levels(0) == []          # its levels are out
    assert (c.counters["quiet"], c.counters["quiet_resyncs"], c.counters["quiet_resyncs_held"]) == (1, 1, 0)
    # An update of the old subscription is dropped; the resubscription's book makes BTC live again.
    c.frame(w(upd("BTCUSD", "10", "5")), 4, 4.1)
    c.frame(w(snap("BTCUSD", [["10", "2"]], [["11", "1"]])), 5, 4.2)
    c.tick(4.25, 5)
    assert bus(c) == [("BTC/USD", SNAP, "")]
    assert c.streams["BTC/USD"].status == LIVE and c.streams["BTC/USD"].book.levels(0) == [(D(10), D(2))]
    # Its quiet clock restarted with the new book: quiet again only quiet_after later.
    c.frame(w(upd("ETHUSD", "2", "50")), 6, 6.0)
    c.tick(6.2, 6)
    assert bus(c) == [("ETH/USD", DELTA, "")]
    c.tick(6.25, 6)
    assert [m[:2] for m in bus(c)] == [("BTC/USD", STALE), ("BTC/USD", SYNCING)]
    assert c.streams["ETH/USD"].status == LIVE


def test_per_symbol_quiet_after_overrides_the_venue() -> None:
    """quiet_after_symbols sets one symbol's period; a symbol without any is never taken for quiet."""
    c = core_for(spec(checksum=None, conn_seq=False), quiet_after_symbols={"ETH/USD": 1.0})
    w = Wire()
    live_pair(c, w, 0.0)
    assert (c.streams["BTC/USD"].quiet_after, c.streams["ETH/USD"].quiet_after) == (None, 1.0)
    c.tick(1.5, 3)
    c.tick(100.0, 3)
    assert [m[:2] for m in bus(c)] == [("ETH/USD", STALE), ("ETH/USD", SYNCING)]
    c2 = core_for(spec(checksum=None, conn_seq=False), quiet_after=5.0, quiet_after_symbols={"ETH/USD": 1.0})
    assert (c2.streams["BTC/USD"].quiet_after, c2.streams["ETH/USD"].quiet_after) == (5.0, 1.0)


def test_budget_holds_quiet_resyncs_until_a_token_is_back() -> None:
    """quiet_resyncs_per_min = 1: of two symbols quiet at once, one resyncs, the other waits a minute (counted once)."""
    c = core_for(spec(checksum=None, conn_seq=False), quiet_after=1.0, options={"quiet_resyncs_per_min": 1})
    w = Wire()
    live_pair(c, w, 0.0)
    c.tick(1.5, 3)
    assert [m[:2] for m in bus(c)] == [("BTC/USD", STALE), ("ETH/USD", STALE), ("BTC/USD", SYNCING)]
    assert c.take_actions() == [Send(["unsub BTCUSD", "sub BTCUSD"])]
    assert c.counters["quiet_resyncs_held"] == 1
    c.frame(w(snap("BTCUSD", [["10", "2"]], [["11", "1"]])), 4, 1.6)
    for t in (2.0, 30.0, 61.4):            # the token comes back at 1.5 + 60 s
        c.frame(w(upd("BTCUSD", "10", str(t)), upd("ETHUSD", "2", str(t))), 5, t)
        c.flush()
        c.tick(t, 5)
    # ETH's updates while it waits are dropped: its levels stay out until its resync's book.
    assert [m[:2] for m in bus(c)] == [("BTC/USD", SNAP)] + [("BTC/USD", DELTA)] * 3
    assert c.take_actions() == [] and c.streams["ETH/USD"].status == STALE
    assert c.streams["ETH/USD"].book.levels(0) == []
    assert c.counters["quiet_resyncs_held"] == 1          # one wait, counted once
    c.frame(w(upd("BTCUSD", "10", "62")), 6, 61.5)
    c.tick(61.5, 6)
    assert [m[:2] for m in bus(c)] == [("BTC/USD", DELTA), ("ETH/USD", SYNCING)]
    assert c.take_actions() == [Send(["unsub ETHUSD", "sub ETHUSD"])]
    assert c.counters["quiet_resyncs"] == 2


def test_reconnect_venue_quiet_symbol_reconnects() -> None:
    """A venue whose book only comes with a new connection: a quiet symbol asks for a reconnect."""
    c = core_for(spec(checksum=None, conn_seq=False, resync=RECONNECT, resubscribe=None), quiet_after=1.0)
    w = Wire()
    live_pair(c, w, 0.0)
    c.frame(w(upd("ETHUSD", "2", "3")), 3, 1.0)
    c.tick(1.5, 3)
    assert [m[:2] for m in bus(c)] == [("ETH/USD", DELTA), ("BTC/USD", STALE), ("BTC/USD", SYNCING)]
    acts = c.take_actions()
    assert len(acts) == 1 and isinstance(acts[0], Reconnect) and acts[0].status == SYNCING
    assert acts[0].reason.startswith("BTC/USD: quiet for 1 s: resync (reconnect)")


def test_connection_end_forgets_waiting_quiet_resyncs() -> None:
    """A quiet resync waiting for budget is dropped when the connection ends: the new one rebuilds every book."""
    c = core_for(spec(checksum=None, conn_seq=False), quiet_after=1.0, options={"quiet_resyncs_per_min": 1})
    w = Wire()
    live_pair(c, w, 0.0)
    c.tick(1.5, 3)
    c.take_actions()
    assert c.quiet.queue == [c.streams["ETH/USD"]]
    c.disconnected("down", "connection lost", 4)
    assert c.quiet.queue == [] and not c.streams["ETH/USD"].quiet_wait
    c.connected(100.0, 5)
    assert c.take_actions() == [Send(["sub BTCUSD ETHUSD"])]
    c.tick(100.25, 5)
    assert c.take_actions() == []


def test_bad_budget_option_is_a_config_error_naming_the_key() -> None:
    """quiet_resyncs_per_min must be a finite number > 0; quiet_after and its per-symbol values > 0."""
    raw = tomllib.loads((REPO / "deploy" / "demo.toml").read_text())
    good = copy.deepcopy(raw)
    good["venues"]["binance"]["options"] = {"quiet_resyncs_per_min": 0.5}
    assert config.build(good).venue("binance").options == {"quiet_resyncs_per_min": 0.5}
    for key, bad in (("options", {"quiet_resyncs_per_min": 0}), ("options", {"quiet_resyncs_per_min": "4"}),
                     ("options", {"quiet_resyncs_per_min": float("inf")}), ("quiet_after", 0),
                     ("quiet_after_symbols", {"BTC/USDT": -1.0})):
        r = copy.deepcopy(raw)
        r["venues"]["binance"][key] = bad
        with pytest.raises(ConfigError, match=r"venues\.binance\.(options\.quiet_resyncs_per_min|quiet_after)"):
            config.build(r)


# --- a toy REST venue: Binance's sync rule, a book from a REST snapshot -----------------------


def rest_parse(text: str | bytes) -> Frame | list[Frame]:
    """{"k": key, "U": first, "u": last, "b": [[p, q]], "a": [..]}"""
    m = json.loads(text)
    return DepthEvent(m["k"], m["U"], m["u"], 0, [(D(p), D(q)) for p, q in m.get("b", [])],
                      [(D(p), D(q)) for p, q in m.get("a", [])])


def rest_snapshot(text: str | bytes, key: str) -> Snapshot:
    m = json.loads(text)
    return Snapshot(key, m["last"], 0, [(D(p), D(q)) for p, q in m["b"]], [(D(p), D(q)) for p, q in m["a"]])


def rest_spec() -> FeedSpec:
    return FeedSpec(kind="toyrest", key_of=lambda s: s.replace("/", ""), ws_url=lambda cfg, keys: "ws://x",
                    subscribe=lambda cfg, keys: [], parse_frame=rest_parse, pairs_url=lambda cfg: None,
                    parse_pairs=lambda t: {}, sequencer=BinanceSequencer, snapshot=REST,
                    snapshot_url=lambda cfg, key: f"http://x/{key}", parse_snapshot=rest_snapshot, resync=REST)


def ev(k: str, first: int, last: int, price: str = "10", qty: str = "1") -> str:
    return json.dumps({"k": k, "U": first, "u": last, "b": [[price, qty]]})


def body(last: int, bid: str = "10") -> str:
    return json.dumps({"last": last, "b": [[bid, "1"]], "a": [["11", "1"]]})


def test_rest_venue_quiet_resync_fetches_once_the_stream_speaks_again() -> None:
    """REST venue: stale at quiet_after; no fetch while the symbol's stream is silent (the sequencer
    would refuse the snapshot); its first event brings one fetch, and the book is live again."""
    c = core_for(rest_spec(), quiet_after=2.0)
    c.connected(0.0, 1)
    assert c.take_actions() == [Fetch("BTC/USD"), Fetch("ETH/USD")]
    c.frame(ev("BTCUSD", 100, 100), 2, 0.1)
    c.frame(ev("ETHUSD", 500, 500), 2, 0.1)
    c.snapshot_body("BTC/USD", body(100), 3)
    c.snapshot_body("ETH/USD", body(500, "2"), 3)
    assert bus(c) == [("BTC/USD", SNAP, ""), ("ETH/USD", SNAP, "")]
    n = 500
    for i in range(1, 21):                 # ETH changes every 0.5 s for 10 s; BTC is silent
        t = 0.1 + i * 0.5
        n += 1
        c.frame(ev("ETHUSD", n, n, "2", str(i)), 4, t)
        c.flush()
        c.tick(t, 4)
    out = bus(c)
    assert [m for m in out if m[0] == "BTC/USD"] == [("BTC/USD", STALE, "book unchanged for 2.5 s (quiet_after 2 s)")]
    assert all(m[1] == DELTA for m in out if m[0] == "ETH/USD")
    assert c.take_actions() == []          # nothing fetched while BTC says nothing
    assert c.counters["quiet_resyncs"] == 0
    # BTC speaks again (its ids jumped: the venue went on without sending): one fetch, then live.
    c.frame(ev("BTCUSD", 140, 141, "10", "7"), 5, 10.2)
    c.tick(10.25, 5)
    assert bus(c) == [("BTC/USD", SYNCING, "quiet for 2 s: resync (REST snapshot)")]
    assert c.take_actions() == [Fetch("BTC/USD")]
    c.snapshot_body("BTC/USD", body(140), 6)
    assert bus(c) == [("BTC/USD", SNAP, "")]
    assert c.streams["BTC/USD"].book.levels(0) == [(D(10), D(7))]
    assert c.streams["ETH/USD"].status == LIVE and c.counters["quiet_resyncs"] == 1


# --- the simulator's silence_symbol fault on the wire ------------------------------------------


def test_silence_symbol_binance_stops_one_symbol_answers_rest_and_resumes_with_a_jump() -> None:
    """Binance: BTC events stop on the connection while ETH goes on; the REST snapshot is answered
    (the truth moved on); after the silence BTC resumes with U jumping over the ids used meanwhile."""
    r = tsim.make(rate=200.0, venues={"binance": {"kind": "binance", "port": 0}})
    try:
        assert r.ctl("/fault", venue="binance", kind="silence_symbol").status_code == 400   # symbol= required
        with r.ws("binance", "/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms") as ws:
            before = [f["data"] for f in tsim.frames(ws, 20)]
            reply = r.ctl("/fault", venue="binance", kind="silence_symbol", symbol="BTC/USDT", seconds=3).json()
            assert reply["fault"] == {"venue": "binance", "kind": "silence_symbol", "symbol": "BTC/USDT",
                                      "seconds": 3.0}
            id1 = r.rest("binance", "/api/v3/depth", symbol="BTCUSDT", limit=5).json()["lastUpdateId"]
            during = [f["data"] for f in tsim.frames(ws, 200)]
            snap2 = r.rest("binance", "/api/v3/depth", symbol="BTCUSDT", limit=5)
            stats = r.ctl("/stats").json()["venues"]["binance"]
            after: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while not any(d["s"] == "BTCUSDT" and d["u"] > id1 for d in after) and time.monotonic() < deadline:
                after += [f["data"] for f in tsim.frames(ws, 50)]
        assert snap2.status_code == 200 and snap2.json()["lastUpdateId"] > id1
        assert "BTC/USDT" in stats["symbols_silenced"] and stats["events_muted"] > 0
        assert {d["s"] for d in before} == {"BTCUSDT", "ETHUSDT"}
        assert all(d["u"] <= id1 for d in during if d["s"] == "BTCUSDT")      # only what was sent before
        assert sum(d["s"] == "ETHUSDT" for d in during) >= 190
        resumed = next(d for d in after if d["s"] == "BTCUSDT" and d["u"] > id1)
        assert resumed["U"] > snap2.json()["lastUpdateId"]
        assert r.ctl("/stats").json()["venues"]["binance"]["symbols_silenced"] == {}
    finally:
        r.close()


def test_silence_symbol_coinbase_keeps_sequence_num_and_answers_a_resubscribe() -> None:
    """Coinbase Advanced Trade: BTC updates stop, ETH and heartbeats go on, sequence_num stays
    contiguous (the other products see no jump), and a resubscription still brings BTC's snapshot."""
    r = tsim_cb.make()
    try:
        with r.ws("coinbase", "/") as ws:
            tsim_cb.at_subscribe(ws, "BTC-USD", "ETH-USD")
            before = tsim_cb.recv_all(ws, until=lambda fs: len(fs) >= 5)
            r.ctl("/fault", venue="coinbase", kind="silence_symbol", symbol="BTC/USD", seconds=60)
            during = tsim_cb.recv_all(ws, until=lambda fs: sum(f["channel"] == "heartbeats" for f in fs) >= 2)
            for kind in ("unsubscribe", "subscribe"):
                ws.send(json.dumps({"type": kind, "product_ids": ["BTC-USD"], "channel": "level2"}))
            after = tsim_cb.recv_all(ws, until=lambda fs: any(
                e["type"] == "snapshot" for f in fs if f["channel"] == "l2_data" for e in f["events"]))
    finally:
        r.close()
    seqs = [f["sequence_num"] for f in before + during + after]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    def updates(fs: list[Any], product: str) -> int:
        return sum(1 for f in fs if f["channel"] == "l2_data" for e in f["events"]
                   if e["type"] == "update" and e["product_id"] == product)
    assert updates(during, "BTC-USD") <= 1          # at most the batch collected before the fault
    assert updates(during, "ETH-USD") >= 10
    snaps = [e for f in after if f["channel"] == "l2_data" for e in f["events"] if e["type"] == "snapshot"]
    assert [e["product_id"] for e in snaps] == ["BTC-USD"] and len(snaps[0]["updates"]) > 100


# --- end to end: the simulator's silence_symbol fault through real feeds -----------------------

QUIET_AFTER = 2.0      # s; the market ticks 20 times a second per symbol, so a healthy book never waits this long
SILENCE = 5.0          # s the silenced symbol's events stop
E2E_SYMS = ["BTC/USDT", "ETH/USDT"]
SILENCED, OTHER = E2E_SYMS
#: venue -> (config, the venue's resync is per symbol: do the other symbols stay live?)
E2E_VENUES: dict[str, tuple[dict[str, Any], bool]] = {
    "binance": ({"kind": "binance", "api": "spot"}, True),              # REST refetch
    "bitstamp": ({"kind": "bitstamp", "api": "v2"}, True),              # REST refetch
    "coinbase": ({"kind": "coinbase", "api": "advanced"}, True),        # resubscribe (sequence_num)
    "kraken": ({"kind": "kraken", "api": "v2", "depth": 25}, True),     # resubscribe (checksum)
    "gemini": ({"kind": "gemini", "api": "ws"}, False),                 # reconnect: every symbol resyncs
}


class FeedTap:
    """A SUB socket on one feed's bus: every message of that venue, decoded, in order."""

    def __init__(self, endpoint: str, venue: str, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, f"md.{venue}.".encode())
        self.sock.connect(endpoint)
        self.msgs: list[FeedMsg] = []

    def drain(self) -> None:
        while self.sock.poll(0):
            self.msgs.append(schema.decode_feed(self.sock.recv_multipart()))

    def live(self, symbol: str) -> bool:
        """The last message of ``symbol`` left it live (a snap or a delta)."""
        last = next((m for m in reversed(self.msgs) if m.symbol == symbol), None)   # type: ignore[union-attr]
        return isinstance(last, BookMsg)


@pytest.fixture(scope="module")
def quiet_pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimPipeline, dict[str, FeedTap]]]:
    venues = {vid: {**cfg, "quiet_after": QUIET_AFTER} for vid, (cfg, _) in E2E_VENUES.items()}
    p = SimPipeline(tmp_path_factory.mktemp("quiet"), venues, E2E_SYMS)
    # A high budget: settle() pauses the market, so every book goes quiet while it compares for
    # longer than QUIET_AFTER; the budget itself is tested in-process above.
    with open(p.cfg, "a") as f:
        for vid in E2E_VENUES:
            f.write(f"\n[venues.{vid}.options]\nquiet_resyncs_per_min = 600\n")
    taps = {vid: FeedTap(p.ep[vid]["pub"], vid, p.ctx) for vid in E2E_VENUES}
    try:
        p.start()
        p.settle("start-up", timeout=120)
        yield p, taps
    finally:
        for t in taps.values():
            t.sock.close(0)
        p.close()
        print("\n" + "\n".join(E2E_REPORT))


E2E_REPORT: list[str] = []


@pytest.mark.parametrize("venue", list(E2E_VENUES))
def test_silenced_symbol_goes_stale_and_comes_back_live(quiet_pipe: tuple[SimPipeline, dict[str, FeedTap]],
                                                        venue: str) -> None:
    """A symbol silenced on a connection that keeps sending the others: ``stale`` (levels out),
    ``live`` again after a resync, the others never leave ``live`` (but where the venue's resync
    is a reconnect); then the published books equal the truth."""
    pipe, taps = quiet_pipe
    tap = taps[venue]

    def pump() -> None:
        pipe.drain()              # also checks that no snapshot carries levels of a venue not live
        for t in taps.values():
            t.drain()
    wait_until(lambda: pipe.all_live() and all(tap.live(s) for s in E2E_SYMS), timeout=60, pump=pump,
               what=f"{venue} live before the fault")
    mark = len(tap.msgs)
    pipe.sim.get("/fault", venue=venue, kind="silence_symbol", symbol=SILENCED, seconds=SILENCE)
    t0 = time.monotonic()

    def stale_then_live() -> bool:
        mine = [m for m in tap.msgs[mark:] if m.symbol == SILENCED]  # type: ignore[union-attr]
        i = next((i for i, m in enumerate(mine) if isinstance(m, StatusMsg) and m.status == STALE), None)
        return i is not None and any(isinstance(m, BookMsg) and m.kind == SNAP for m in mine[i:])
    wait_until(stale_then_live, timeout=60, pump=pump, what=f"{venue} {SILENCED} stale, then live again")
    back = time.monotonic() - t0
    wait_until(lambda: not pipe.sim.get("/stats")["venues"][venue]["symbols_silenced"], timeout=60, pump=pump,
               what="the silence over")
    wait_until(lambda: all(tap.live(s) for s in E2E_SYMS), timeout=60, pump=pump, what=f"{venue} live after it")
    window = tap.msgs[mark:]      # before settle() pauses the market (a pause makes every book quiet)

    statuses = [(m.status, m.reason) for m in window if isinstance(m, StatusMsg) and m.symbol == SILENCED]
    assert statuses[0][0] == STALE and f"(quiet_after {QUIET_AFTER:g} s)" in statuses[0][1]
    assert {st for st, _ in statuses} <= {STALE, SYNCING}
    other = [m for m in window if m.symbol == OTHER]  # type: ignore[union-attr]
    assert any(isinstance(m, BookMsg) and m.kind == DELTA for m in other)
    other_statuses = [(m.status, m.reason) for m in other if isinstance(m, StatusMsg)]
    if E2E_VENUES[venue][1]:
        assert other_statuses == []
    else:                         # the reconnect resyncs the connection's every symbol
        assert other_statuses and all(st == SYNCING for st, _ in other_statuses)
        assert f"{SILENCED}: quiet for {QUIET_AFTER:g} s" in other_statuses[0][1]
    silenced = sum(1 for m in window if isinstance(m, StatusMsg) and m.symbol == SILENCED and m.status == STALE)
    took = pipe.settle(f"{venue} silence_symbol")
    E2E_REPORT.append(f"{venue:9s} silence_symbol {SILENCE:g} s (quiet_after {QUIET_AFTER:g} s): stale then live "
                      f"after {back:.2f} s, stale {silenced} time(s); settled to truth in {took:.2f} s")
