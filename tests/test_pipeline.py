"""The core pipeline over real processes and sockets: scripted feeds -> aggregator -> publisher ->
a plain SUB subscriber, compared with an independent reference merge of plain dicts."""

from __future__ import annotations

import itertools
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.harness import ScriptedFeed, Subscriber, procs, wait_until, write_config

SYM = "BTC/USDT"
N = 5


def canon(d: Decimal) -> str:
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def reference(feeds: list[ScriptedFeed], symbol: str, n: int,
              dust: dict[str, tuple[Decimal, Decimal]] | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """Top-n merged levels of the live venues, written independently of the aggregator's code."""
    bids: list[tuple[Decimal, Decimal, str]] = []
    asks: list[tuple[Decimal, Decimal, str]] = []
    for f in feeds:
        if f.status.get(symbol) != "live":
            continue
        b, a = f.books[symbol]
        min_amount, min_notional = (dust or {}).get(f.venue, (Decimal(0), Decimal(0)))
        for p, q in b.items():
            if q >= min_amount and p * q >= min_notional:
                bids.append((p, q, f.venue))
        for p, q in a.items():
            if q >= min_amount and p * q >= min_notional:
                asks.append((p, q, f.venue))
    bids.sort(key=lambda x: (-x[0], -x[1], x[2]))
    asks.sort(key=lambda x: (x[0], -x[1], x[2]))
    return ([[canon(p), canon(q), v] for p, q, v in bids[:n]],
            [[canon(p), canon(q), v] for p, q, v in asks[:n]])


def book_of(i: int, mid: int, rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
    bids = {f"{mid - k}.{rng.randint(0, 9)}": f"{rng.randint(1, 500) / 100}" for k in range(1, 30)}
    asks = {f"{mid + k}.{rng.randint(0, 9)}": f"{rng.randint(1, 500) / 100}" for k in range(1, 30)}
    return bids, asks


@pytest.fixture
def pipeline(tmp_path: Path):
    """Aggregator + publisher processes, two scripted venues, one subscriber."""
    cfg = tmp_path / "bookmux.toml"
    ep = write_config(cfg, symbols=[SYM], levels=N, down_after=1.0, depletion={SYM: ["1", "5"]},
                      venues={"alpha": {"stale_after": 5.0},
                              "beta": {"stale_after": 5.0, "dust": {SYM: ("0.05", "0")}}})
    ctx = zmq.Context()
    feeds = [ScriptedFeed(v, ep[v]["pub"], ep[v]["ctl"], ctx) for v in ("alpha", "beta")]
    sub = Subscriber(f"tcp://127.0.0.1:{ep['pub_port']}", SYM, ctx)
    with procs(tmp_path) as ps:
        ps.start("aggregator", "services.aggregator", "--config", str(cfg))
        ps.start("publisher", "services.publisher", "--config", str(cfg))
        yield feeds, sub, ps, ep
    sub.sock.close(0)
    for f in feeds:
        f.close()
    ctx.term()


def pump_all(feeds: list[ScriptedFeed], sub: Subscriber):
    last_hb = [0.0]

    def pump() -> None:
        for f in feeds:
            f.pump()
        if time.monotonic() - last_hb[0] > 0.2:
            last_hb[0] = time.monotonic()
            for f in feeds:
                f.heartbeat()
        sub.drain(20)
    return pump


def matches(sub: Subscriber, feeds: list[ScriptedFeed], dust: Any = None) -> bool:
    m = sub.last
    if m is None:
        return False
    bids, asks = reference(feeds, SYM, N, dust)
    return m["bids"] == bids and m["asks"] == asks


DUST = {"beta": (Decimal("0.05"), Decimal(0))}


def check_contract(msgs: list[dict[str, Any]]) -> None:
    """seq is +1 per snapshot within an epoch; spread = best ask - best bid."""
    for prev, cur in itertools.pairwise(msgs):
        if prev["epoch"] == cur["epoch"]:
            assert cur["seq"] == prev["seq"] + 1, (prev["seq"], cur["seq"])
    for m in msgs:
        if m["bids"] and m["asks"]:
            assert Decimal(m["spread"]) == Decimal(m["asks"][0][0]) - Decimal(m["bids"][0][0])
        else:
            assert m["spread"] is None


def test_merged_snapshots_equal_reference_merge(pipeline) -> None:
    """Random deltas on two venues: every published state is contiguous, the final one equals the
    reference merge (dust filter applied on one venue)."""
    feeds, sub, *_ = pipeline
    rng = random.Random(1)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    for step in range(300):
        f = rng.choice(feeds)
        b, a = f.books[SYM]
        side = rng.choice([0, 1])
        book = b if side == 0 else a
        if book and rng.random() < 0.3:
            p = rng.choice(list(book))
            upd = {str(p): "0"}
        else:
            base = 43000 - rng.randint(1, 20) if side == 0 else 43000 + rng.randint(2, 20)
            upd = {f"{base}.{rng.randint(0, 9)}": f"{rng.choice(['0.01', '0.04', '0.5', '1.25', '3'])}"}
        f.delta(SYM, upd if side == 0 else {}, upd if side == 1 else {})
        if step % 25 == 0:
            pump()
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="merged book = reference")
    m = sub.last
    assert m is not None
    assert m["venues"] == {"alpha": "live", "beta": "live"}
    assert m["symbol"] == SYM and len(m["bids"]) == N and len(m["asks"]) == N
    assert isinstance(m["ts"], int) and m["ts"] > 0
    check_contract(sub.received)


def test_dropped_bus_message_is_detected_and_healed(pipeline) -> None:
    """A delta lost on the bus: the venue goes syncing (levels out), a snapshot request heals it."""
    feeds, sub, ps, _ = pipeline
    rng = random.Random(2)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    alpha = feeds[0]
    requests_before = alpha.snap_requests
    best_bid = max(alpha.books[SYM][0])
    alpha.delta(SYM, {str(best_bid + Decimal("0.5")): "7"}, {}, send=False)   # lost on the bus
    alpha.delta(SYM, {str(best_bid + Decimal("0.3")): "2"}, {})               # seq jumps
    took = wait_until(lambda: matches(sub, feeds, DUST) and sub.last["venues"]["alpha"] == "live"
                      and alpha.snap_requests > requests_before,
                      timeout=20, pump=pump, what="gap healed by a snapshot")
    seen = [m["venues"]["alpha"] for m in sub.received]
    # Never a wrong book: no published state ever showed the level after the lost one without it.
    for m in sub.received:
        prices = [b[0] for b in m["bids"] if b[2] == "alpha"]
        assert not (canon(best_bid + Decimal("0.3")) in prices and canon(best_bid + Decimal("0.5")) not in prices)
    assert "gap" in ps.log("aggregator")
    print(f"gap healed in {took:.3f} s; alpha statuses seen: {sorted(set(seen))}")


def test_lost_tail_is_seen_in_heartbeat(pipeline) -> None:
    """The last message of a quiet stream is lost: the heartbeat's seq reveals it."""
    feeds, sub, ps, _ = pipeline
    rng = random.Random(3)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    beta = feeds[1]
    best_ask = min(beta.books[SYM][1])
    beta.delta(SYM, {}, {str(best_ask - Decimal("0.1")): "9"}, send=False)
    wait_until(lambda: matches(sub, feeds, DUST) and "lost messages" in ps.log("aggregator"),
               timeout=20, pump=pump, what="lost tail detected and healed")


def test_venue_down_and_status_leave_the_merged_book(pipeline) -> None:
    """A feed that stops (no heartbeat) is `down`; a `stale` status removes a venue's levels."""
    feeds, sub, *_ = pipeline
    rng = random.Random(4)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    alpha, beta = feeds
    beta.set_status(SYM, "stale", "no frames for 5 s")
    wait_until(lambda: sub.last["venues"]["beta"] == "stale" and matches(sub, feeds, DUST), timeout=20,
               pump=pump, what="stale venue out of the book")
    assert all(lv[2] == "alpha" for lv in sub.last["bids"] + sub.last["asks"])
    alpha.silent = True
    wait_until(lambda: sub.last["venues"]["alpha"] == "down", timeout=20, pump=pump, what="alpha down")
    assert sub.last["bids"] == [] and sub.last["asks"] == [] and sub.last["spread"] is None
    alpha.silent = False
    beta.snap(SYM, *book_of(1, 43001, rng))
    wait_until(lambda: sub.last["venues"] == {"alpha": "live", "beta": "live"} and matches(sub, feeds, DUST),
               timeout=20, pump=pump, what="both venues back")
    check_contract(sub.received)


def test_crossed_venues_give_a_negative_spread(pipeline) -> None:
    """Venues that cross each other are reported as they are: the spread goes negative."""
    feeds, sub, *_ = pipeline
    pump = pump_all(feeds, sub)
    feeds[0].snap(SYM, {"100.5": "1"}, {"101": "1"})
    feeds[1].snap(SYM, {"99": "1"}, {"100": "2"})
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="crossed book")
    assert sub.last["spread"] == "-0.5"


def test_late_joiner_gets_the_book_at_once_in_a_quiet_market(pipeline) -> None:
    """No market change after the join: the new subscriber still gets a full book, and the
    subscriber already there sees one more snapshot with a contiguous seq."""
    feeds, sub, *_ = pipeline
    rng = random.Random(5)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    ctx = zmq.Context.instance()
    late = Subscriber(sub.sock.getsockopt_string(zmq.LAST_ENDPOINT), SYM, ctx)
    try:
        took = wait_until(lambda: bool(late.drain(20)), timeout=20, pump=pump, what="late joiner's first book")
        assert late.last is not None and late.last["bids"] == sub.last["bids"]
        assert late.last["asks"] == sub.last["asks"]
        check_contract(sub.received)
        print(f"late joiner served in {took:.3f} s")
    finally:
        late.sock.close(0)


def test_query_answers_on_the_published_state(pipeline) -> None:
    """A depletion query over real sockets names the epoch/seq of the last published snapshot,
    and its merged fills start with exactly that snapshot's levels."""
    from common import bus, query

    feeds, sub, _, ep = pipeline
    rng = random.Random(6)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    pump()
    req = bus.req(ep["query"], timeout_ms=10_000)
    try:
        for side, levels in (("sell", "bids"), ("buy", "asks")):
            req.send(query.encode_request(SYM, side, quantity="3", all_venues=True))
            reply = query.decode_reply(req.recv())
            assert reply.ok, reply.error
            m = sub.last
            assert (reply.epoch, reply.seq) == (m["epoch"], m["seq"])
            fills = reply.merged["fills"]
            assert fills[:-1] == m[levels][: len(fills) - 1]     # whole levels taken, the last maybe in part
            assert [f[:1] + f[2:] for f in fills] == [lv[:1] + lv[2:] for lv in m[levels][: len(fills)]]
            assert set(reply.venues) == {"alpha", "beta"} and reply.statuses == m["venues"]
            assert "depletion" in m and set(m["depletion"]) == {"buy", "sell"}
        req.send(b"\x00garbage")
        bad = query.decode_reply(req.recv())
        assert not bad.ok and bad.error
        req.send(query.encode_request(SYM, "buy", quantity="1"))
        assert query.decode_reply(req.recv()).ok, "the aggregator keeps serving after garbage"
    finally:
        req.close(0)


def test_stalled_subscriber_costs_the_others_nothing(pipeline) -> None:
    """A subscriber that connects and never reads: the reading one still gets every snapshot in
    order (no drop, no gap), and the publisher stays up with bounded queues (SNDHWM)."""
    feeds, sub, ps, ep = pipeline
    rng = random.Random(7)
    pump = pump_all(feeds, sub)
    for i, f in enumerate(feeds):
        f.snap(SYM, *book_of(i, 43000 + i, rng))
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(f"tcp://127.0.0.1:{ep['pub_port']}")
    try:
        time.sleep(0.3)
        first = len(sub.received)
        alpha = feeds[0]
        for step in range(3000):
            alpha.delta(SYM, {"42999.95": f"{1 + step % 50}"}, {})   # the top level: every one shows
            if step % 100 == 0:
                pump()
        wait_until(lambda: matches(sub, feeds, DUST), timeout=30, pump=pump, what="the reader caught up")
        got = sub.received[first:]
        assert len(got) > 10      # (the aggregator batches what arrives together)
        check_contract(sub.received)     # contiguous seq: the stalled peer cost the reader nothing
        assert ps.procs["publisher"].poll() is None
    finally:
        stalled.close(0)


def test_watch_client_prints_the_live_book(pipeline) -> None:
    """`python -m services.client watch` (the CLI a user runs) prints the merged book it receives."""
    import subprocess
    import sys

    feeds, sub, _, ep = pipeline
    pump = pump_all(feeds, sub)
    feeds[0].snap(SYM, {"100.5": "1.25"}, {"101": "3"})
    feeds[1].snap(SYM, {"100": "2"}, {"101.5": "0.5"})
    wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
    proc = subprocess.Popen([sys.executable, "-m", "services.client", "watch", SYM, "--count", "1", "--no-clear",
                             "--endpoint", f"tcp://127.0.0.1:{ep['pub_port']}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=20)   # served at once: a late joiner gets the book
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "BTC/USDT  spread 0.5" in out and "alpha:live" in out and "beta:live" in out
    rows = [line for line in out.splitlines() if "|" in line and "BID venue" not in line]
    assert rows[0].split() == ["alpha", "1.25", "100.5", "|", "101", "3", "alpha"]
    assert rows[1].split() == ["beta", "2", "100", "|", "101.5", "0.5", "beta"]


def test_a_venue_split_over_two_feed_processes_is_one_venue(tmp_path: Path) -> None:
    """[[venues.alpha.shards]]: two feed processes carry alpha's symbols; subscribers see one
    venue id, and one shard going down takes only its own symbols out."""
    from tests.harness import free_port

    cfg = tmp_path / "bookmux.toml"
    shard_ep = [(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}") for _ in range(2)]
    extra = "".join(f'\n[[venues.alpha.shards]]\nsymbols = ["{sym}"]\npub = "{p}"\nctl = "{c}"\n'
                    for sym, (p, c) in zip(("BTC/USDT", "ETH/USDT"), shard_ep))
    ep = write_config(cfg, symbols=["BTC/USDT", "ETH/USDT"], levels=N, down_after=1.0,
                      venues={"alpha": {}}, extra=extra)
    ctx = zmq.Context()
    shards = [ScriptedFeed("alpha", p, c, ctx) for p, c in shard_ep]
    subs = {s: Subscriber(f"tcp://127.0.0.1:{ep['pub_port']}", s, ctx) for s in ("BTC/USDT", "ETH/USDT")}
    try:
        with procs(tmp_path) as ps:
            ps.start("aggregator", "services.aggregator", "--config", str(cfg))
            ps.start("publisher", "services.publisher", "--config", str(cfg))
            last_hb = [0.0]

            def pump() -> None:
                for f in shards:
                    f.pump()
                if time.monotonic() - last_hb[0] > 0.2:
                    last_hb[0] = time.monotonic()
                    for f in shards:
                        f.heartbeat()
                for sub in subs.values():
                    sub.drain(10)

            shards[0].snap("BTC/USDT", {"43000": "1"}, {"43001": "2"})
            shards[1].snap("ETH/USDT", {"2300": "3"}, {"2301": "4"})
            wait_until(lambda: all(s.last is not None and s.last["venues"] == {"alpha": "live"} and s.last["bids"]
                                   for s in subs.values()), timeout=20, pump=pump, what="both shards live")
            assert subs["BTC/USDT"].last["bids"] == [["43000", "1", "alpha"]]
            assert subs["ETH/USDT"].last["asks"] == [["2301", "4", "alpha"]]
            shards[1].silent = True
            wait_until(lambda: subs["ETH/USDT"].last["venues"] == {"alpha": "down"}, timeout=20, pump=pump,
                       what="the silent shard's symbol down")
            shards[0].delta("BTC/USDT", {"43000.5": "1"}, {})
            wait_until(lambda: subs["BTC/USDT"].last["bids"][0] == ["43000.5", "1", "alpha"], timeout=20,
                       pump=pump, what="the other shard still live")
            assert subs["BTC/USDT"].last["venues"] == {"alpha": "live"}
            assert subs["ETH/USDT"].last["bids"] == []
    finally:
        for sub in subs.values():
            sub.sock.close(0)
        for f in shards:
            f.close()
        ctx.term()
