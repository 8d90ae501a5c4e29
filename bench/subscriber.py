"""A measuring subscriber process: ``python -m bench.subscriber --endpoint E --out F ...``.

Opens ``--sockets`` SUB sockets to the publisher (or the bare chain's last relay), each subscribed
to ``book.`` (every symbol) or to ``--symbols``, blocks in ``poll`` (never spins), decodes every
snapshot with msgpack as a user would, and records ``time_ns() - ts`` (ns) for each one decoded
between ``--start`` and ``--stop`` (Unix seconds). ``--stall`` connects and subscribes but never
reads (a stalled consumer). Writes ``F`` (int64 latencies) and ``F.json`` (counts, sizes, and:)

* ``seq_gaps``: per symbol and socket, snapshots missing between two received in the window (same
  ``epoch``, ``seq`` not the previous + 1: the publisher or this socket's queue dropped some);
* ``max_hold_ms``: the longest a visible input waited for a snapshot carrying it, a lower bound:
  for each snapshot, the venues whose own levels differ from the symbol's previous snapshot at a
  price strictly better than the worst published price of both (where both show every venue's
  levels, so the venue's book itself changed: no other venue's level can have pushed it out) had
  an input after the previous snapshot was built; the oldest of their ``venue_ts`` ``rts`` (each
  venue's latest input, no older than that change) against the receive time. An aggregator that
  coalesced a symbol for 500 ms shows hundreds of ms here however low its per-snapshot latency;
  inputs below the published view (no snapshot needed) are never counted."""

from __future__ import annotations

import argparse
import array
import json
import signal
import time
from decimal import Decimal
from typing import Any

import msgpack
import zmq


def changed_venues(prev: dict[str, Any], cur: dict[str, Any]) -> set[str]:
    """Venues whose own levels differ between two snapshots of a symbol at a price strictly better
    than both snapshots' worst published price on that side."""
    out: set[str] = set()
    for side, better in (("bids", lambda a, b: a > b), ("asks", lambda a, b: a < b)):
        a, b = prev.get(side) or [], cur.get(side) or []
        if not a or not b:
            continue
        wa, wb = Decimal(a[-1][0]), Decimal(b[-1][0])
        limit = wb if better(wb, wa) else wa          # the better of the two worst prices: both show all above it
        pa = {(lv[2], lv[0]): lv[1] for lv in a if better(Decimal(lv[0]), limit)}
        pb = {(lv[2], lv[0]): lv[1] for lv in b if better(Decimal(lv[0]), limit)}
        for k in pa.keys() | pb.keys():
            if pa.get(k) != pb.get(k):
                out.add(k[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--sockets", type=int, default=1)
    ap.add_argument("--symbols", default="", help="comma-separated; empty = every book.* topic")
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--stop", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stall", action="store_true")
    ap.add_argument("--rcvhwm", type=int, default=1000)
    a = ap.parse_args()
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGTERM, on_term)
    ctx = zmq.Context()
    topics = [f"book.{s}".encode() for s in a.symbols.split(",") if s] or [b"book."]
    exact = set(topics) if a.symbols else None
    socks = []
    for _ in range(a.sockets):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, a.rcvhwm)
        for t in topics:
            s.setsockopt(zmq.SUBSCRIBE, t)
        s.connect(a.endpoint)
        socks.append(s)
    lat = array.array("q")
    count = 0
    nbytes = 0
    per_socket = [0] * len(socks)
    seq_gaps = 0
    max_hold = 0
    last: dict[tuple[int, bytes], tuple[int, int, dict[str, Any]]] = {}
    if a.stall:
        while not stopping and time.time() < a.stop:
            time.sleep(0.1)
    else:
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        index = {s: i for i, s in enumerate(socks)}
        start_ns, stop_ns = int(a.start * 1e9), int(a.stop * 1e9)
        unpackb = msgpack.unpackb
        while not stopping:
            now = time.time_ns()
            if now >= stop_ns:
                break
            for s, _ in poller.poll(min(200, max(1, (stop_ns - now) // 1_000_000))):
                for _ in range(1000):
                    try:
                        topic, payload = s.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if exact is not None and topic not in exact:
                        continue
                    m = unpackb(payload)
                    t = time.time_ns()
                    i = index[s]
                    k = (i, topic)
                    prev = last.get(k)
                    last[k] = (m.get("epoch", 0), m.get("seq", 0), m)
                    if start_ns <= t < stop_ns:
                        lat.append(t - m["ts"])
                        count += 1
                        nbytes += len(payload)
                        per_socket[i] += 1
                        if prev is not None and prev[0] == m.get("epoch", 0):
                            if m.get("seq", 0) > prev[1] + 1:
                                seq_gaps += m["seq"] - prev[1] - 1
                            vts = m.get("venue_ts") or {}
                            changed = [vts[v].get("rts", 0) for v in changed_venues(prev[2], m) if v in vts]
                            changed = [r for r in changed if r]
                            if changed:
                                max_hold = max(max_hold, t - min(changed))
    with open(a.out, "wb") as f:
        lat.tofile(f)
    with open(a.out + ".json", "w") as f:
        json.dump({"count": count, "mean_bytes": nbytes / count if count else 0, "per_socket": per_socket,
                   "seq_gaps": seq_gaps, "max_hold_ms": max_hold / 1e6}, f)
    for s in socks:
        s.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
