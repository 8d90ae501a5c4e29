"""Section 2: level updates per second through the real aggregator PROCESS and its sockets.

The runner plays both feeds on the real bus schema: it binds their PUB and ROUTER, answers the
aggregator's snapshot requests with full books (simulator-shaped, 250-500 levels per side), then
pushes pre-encoded deltas (real-shaped: as the simulator emits them, ~2.7 levels, or grouped to
>= 10 levels) for every (venue, symbol) as fast as the aggregator takes them (PUB with no
high-water mark, so nothing is dropped and the aggregator's seq check sees no gap). At the end
every stream gets a ``status`` message: the aggregator must publish each symbol with both venues
``syncing``, which proves every message before it was decoded, sequence-checked and applied. The
clock runs from the first send to the last such snapshot. Its log is checked for bus gaps.

Baseline in the same run: the same level updates (already ``Decimal``) applied to one
``SortedDict`` per side and stream, in process.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import zmq
from sortedcontainers import SortedDict

from bench.util import Procs, progress, write_config
from common import schema
from common.schema import DELTA, SNAP, BookMsg, StatusMsg
from services.simulator.market import Market, spec_for

VENUES = ("binance", "bitstamp")


def _pool(symbols: list[str], events: int, group: int) -> dict[tuple[str, str], tuple[Any, list[Any]]]:
    """Per stream: the starting book and ``events`` deltas (lists of (price, qty) per side)."""
    out = {}
    for v in VENUES:
        for sym in symbols:
            rng = random.Random(f"agg:{v}:{sym}")
            m = Market(spec_for(sym), rng)
            start = (m.book.sorted_bids(), m.book.sorted_asks())
            out[(v, sym)] = (start, [market_delta(m, rng, group) for _ in range(events)])
    return out


def market_delta(m: Market, rng: random.Random, group: int) -> tuple[list[tuple[Decimal, Decimal]],
                                                                       list[tuple[Decimal, Decimal]]]:
    """One delta of the simulator's market model: its next event, or (``group`` > 1) its next
    events merged until they change at least ``group`` levels; (bids, asks) of (price, qty)."""
    b: dict[Decimal, Decimal] = {}
    a: dict[Decimal, Decimal] = {}
    while len(b) + len(a) < group:
        ch = m.step(0, 0.0, burst=rng.random() < 0.01)
        b.update(ch.bids)
        a.update(ch.asks)
        if group <= 1:
            break
    return list(b.items()), list(a.items())


def run(workdir: Path, symbols: list[str], *, messages: int, group: int = 1, levels: int = 10,
        timeout: float = 120) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    per_stream = max(1, messages // (len(symbols) * len(VENUES)))
    pool_n = min(per_stream, 200)
    pool = _pool(symbols, pool_n, group)
    sess = time.time_ns()
    # pre-encode everything (not timed): the frames the feeds would publish
    batches: dict[str, list[list[bytes]]] = {v: [] for v in VENUES}
    total_levels = 0
    rts = time.time_ns()
    for i in range(per_stream):
        for sym in symbols:
            for v in VENUES:
                bids, asks = pool[(v, sym)][1][i % pool_n]
                total_levels += len(bids) + len(asks)
                rts += 1
                batches[v].append(schema.encode_feed(BookMsg(DELTA, v, sym, sess, i + 2, rts, rts, bids, asks)))
    for v in VENUES:
        for sym in symbols:
            batches[v].append(schema.encode_feed(StatusMsg(v, sym, sess, per_stream + 2, "syncing", "bench end",
                                                           rts + 1)))
    n_msgs = per_stream * len(symbols) * len(VENUES)

    ctx = zmq.Context()
    socks = {}
    eps: dict[str, dict[str, Any]] = {}
    for v in VENUES:
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        ctl = ctx.socket(zmq.ROUTER)
        ctl.setsockopt(zmq.LINGER, 0)
        cport = ctl.bind_to_random_port("tcp://127.0.0.1")
        socks[v] = (pub, ctl)
        eps[v] = {"kind": v, "ws_url": "ws://127.0.0.1:1", "rest_url": "http://127.0.0.1:1",
                  "pub": f"tcp://127.0.0.1:{port}", "ctl": f"tcp://127.0.0.1:{cport}"}
    cfg = workdir / "agg.toml"
    ep = write_config(cfg, symbols=symbols, venues=eps, levels=levels, down_after=600.0,
                      depletion={"BTC/USDT": ["1", "5", "15"], "ETH/USDT": ["10", "50"]})
    sink = ctx.socket(zmq.SUB)
    sink.setsockopt(zmq.LINGER, 0)
    sink.setsockopt(zmq.RCVHWM, 0)
    sink.setsockopt(zmq.SUBSCRIBE, b"book.")
    sink.connect(ep["agg_pub"])
    procs = Procs(workdir / "logs")
    try:
        procs.module("aggregator", "services.aggregator", "--config", str(cfg))
        # answer snapshot requests until every symbol is published with both venues live
        snaps = {(v, s): schema.pack(schema.feed_payload(BookMsg(SNAP, v, s, sess, 1, 0, time.time_ns(),
                                                                 *pool[(v, s)][0])))
                 for v in VENUES for s in symbols}
        live: set[str] = set()
        poller = zmq.Poller()
        poller.register(sink, zmq.POLLIN)
        for v in VENUES:
            poller.register(socks[v][1], zmq.POLLIN)
        deadline = time.monotonic() + 30
        while len(live) < len(symbols):
            if time.monotonic() > deadline or procs.dead():
                raise RuntimeError(f"aggregator not live: {procs.dead()} {procs.log('aggregator')[-1500:]}")
            ev = dict(poller.poll(200))
            for v in VENUES:
                ctl = socks[v][1]
                if ctl in ev:
                    frames = ctl.recv_multipart()
                    want = schema.decode_snapshot_request(frames[-1]) or symbols
                    ctl.send_multipart([frames[0], *[snaps[(v, s)] for s in want]])
            if sink in ev:
                _, payload = sink.recv_multipart()
                m = msgpack.unpackb(payload)
                if set(m["venues"].values()) == {"live"}:
                    live.add(m["symbol"])
        time.sleep(0.5)  # let both bus subscriptions settle (PUB/SUB joins are asynchronous)
        while sink.poll(0):
            sink.recv_multipart()
        pid = procs.pids()["aggregator"]
        from bench.util import cpu_seconds
        c0 = cpu_seconds(pid) or 0.0
        t0 = time.perf_counter()
        # interleave the two venues' sends
        b0, b1 = batches[VENUES[0]], batches[VENUES[1]]
        p0, p1 = socks[VENUES[0]][0], socks[VENUES[1]][0]
        for f0, f1 in zip(b0, b1):
            p0.send_multipart(f0)
            p1.send_multipart(f1)
        t_sent = time.perf_counter() - t0
        done: set[str] = set()
        published = 0
        end = time.monotonic() + timeout
        while len(done) < len(symbols):
            if time.monotonic() > end:
                raise RuntimeError(f"aggregator did not finish in {timeout} s ({len(done)} symbols done)")
            if not sink.poll(500):
                continue
            _, payload = sink.recv_multipart()
            published += 1
            m = msgpack.unpackb(payload)
            if m["venues"] and set(m["venues"].values()) == {"syncing"}:
                done.add(m["symbol"])
        elapsed = time.perf_counter() - t0
        cpu = (cpu_seconds(pid) or 0.0) - c0
        log = procs.log("aggregator")
        gaps = log.count("bus gap") + log.count("lost messages")
    finally:
        procs.close()
        for pub, ctl in socks.values():
            pub.close(0)
            ctl.close(0)
        sink.close(0)
        ctx.term()
    # baseline: the same updates applied to bare SortedDicts
    books = {k: (SortedDict(start[0]), SortedDict(start[1])) for k, (start, _) in pool.items()}
    seq = [(books[(v, sym)], pool[(v, sym)][1][i % pool_n])
           for i in range(per_stream) for sym in symbols for v in VENUES]
    t0 = time.perf_counter()
    for (bd, ad), (bids, asks) in seq:
        for d, lv in ((bd, bids), (ad, asks)):
            for p, q in lv:
                if q:
                    d[p] = q
                else:
                    d.pop(p, None)
    bare = time.perf_counter() - t0
    rate = total_levels / elapsed
    bare_rate = total_levels / bare
    res = {"messages": n_msgs, "levels": total_levels, "levels_per_msg": round(total_levels / n_msgs, 2),
           "elapsed_s": round(elapsed, 3), "send_s": round(t_sent, 3),
           "levels_per_s": round(rate), "msgs_per_s": round(n_msgs / elapsed),
           "bare_levels_per_s": round(bare_rate), "ratio": round(rate / bare_rate, 3),
           "aggregator_cpu_pct": round(100 * cpu / elapsed, 1), "snapshots_published": published,
           "bus_gaps_logged": gaps}
    progress(f"  aggregator ({res['levels_per_msg']} levels/msg): {res['levels_per_s']:,} levels/s "
             f"({res['msgs_per_s']:,} msgs/s), bare SortedDict {res['bare_levels_per_s']:,} levels/s, "
             f"{published} snapshots published, gaps {gaps}")
    return res
