"""``watch``: subscribe to the publisher and print the live merged book (plain text view)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import zmq

from common import bus, schema, security
from common.config import SYMBOL_RE
from common.schema import BusError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("watch", help="print the live merged book of a symbol",
                       description="Subscribe to the publisher and print the merged book as it changes.")
    p.add_argument("symbol", help="canonical symbol, e.g. BTC/USDT")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:50052", help="publisher endpoint (default %(default)s)")
    p.add_argument("--count", type=int, default=0, help="stop after this many snapshots (0: run until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="warn when nothing arrived for this many seconds (default %(default)s)")
    p.add_argument("--no-clear", action="store_true", help="do not redraw in place (one block per snapshot)")
    p.add_argument("--server-key", default=None, metavar="PATH",
                   help="CURVE: the publisher's public key file (keys/server.key); enables encryption")
    p.add_argument("--client-key", default=None, metavar="PATH",
                   help="CURVE: our secret key file, whose public key the publisher allows "
                        "(keys/subscriber.key_secret)")
    p.set_defaults(func=run)


def render(m: dict[str, Any], now_ns: int | None = None) -> str:
    """One snapshot as text: header, venue statuses, bids and asks side by side."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    age_ms = (now_ns - m["ts"]) / 1e6 if m.get("ts") else float("nan")
    venues = "  ".join(f"{v}:{st}" for v, st in sorted(m["venues"].items()))
    lines = [f"{m['symbol']}  spread {m['spread'] if m['spread'] is not None else '-'}  "
             f"epoch {m['epoch']} seq {m['seq']}  age {age_ms:.1f} ms",
             f"venues  {venues}",
             f"{'BID venue':>12} {'amount':>16} {'price':>14} | {'price':<14} {'amount':<16} {'ASK venue':<12}"]
    bids, asks = m["bids"], m["asks"]
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else ["", "", ""]
        a = asks[i] if i < len(asks) else ["", "", ""]
        lines.append(f"{b[2]:>12} {b[1]:>16} {b[0]:>14} | {a[0]:<14} {a[1]:<16} {a[2]:<12}")
    depl = m.get("depletion")
    if isinstance(depl, dict):
        for side in ("buy", "sell"):
            parts = []
            for size, d in (depl.get(side) or {}).items():
                if d.get("vwap") is None:
                    parts.append(f"{size}: no liquidity")
                    continue
                partial = f" PARTIAL {d['filled']}" if d.get("partial") else ""
                parts.append(f"{size} @ {d['vwap']} ({d['slippage_bps']} bps, {d['levels']} lv){partial}")
            if parts:
                lines.append(f"{side:>4} " + "  |  ".join(parts))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not SYMBOL_RE.match(args.symbol.upper()):
        print(f"watch: {args.symbol!r} is not a symbol like BTC/USDT", file=sys.stderr)
        return 2
    symbol = args.symbol.upper()
    topic = schema.book_topic(symbol)
    if bool(args.server_key) != bool(args.client_key):
        print("watch: --server-key and --client-key go together (CURVE)", file=sys.stderr)
        return 2
    s = bus.context().socket(zmq.SUB)
    s.setsockopt(zmq.MAXMSGSIZE, 16 << 20)
    s.setsockopt(zmq.SUBSCRIBE, topic)
    if args.server_key:
        try:
            security.client_keys(s, server_key=args.server_key, client_key=args.client_key)
        except (OSError, ValueError, security.KeyError_) as e:
            print(f"watch: cannot load CURVE keys: {e}", file=sys.stderr)
            return 2
    s.connect(args.endpoint)
    clear = sys.stdout.isatty() and not args.no_clear
    got, last_at = 0, time.monotonic()
    print(f"subscribed to {topic.decode()} on {args.endpoint}; waiting for the first snapshot...", flush=True)
    try:
        while args.count == 0 or got < args.count:
            if not s.poll(1000):
                if time.monotonic() - last_at > args.timeout:
                    print(f"nothing received for {args.timeout:.0f} s: is the publisher running on "
                          f"{args.endpoint}?", file=sys.stderr, flush=True)
                    last_at = time.monotonic()
                continue
            frames = s.recv_multipart()
            if frames[0] != topic:   # ZeroMQ matches prefixes: compare the topic exactly
                continue
            try:
                m = schema.unpack(frames[1])
                text = render(m)
            except (BusError, KeyError, TypeError, IndexError) as e:
                print(f"malformed snapshot: {e}", file=sys.stderr)
                continue
            got += 1
            last_at = time.monotonic()
            print(("\x1b[H\x1b[2J" if clear else "\n") + text, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        s.close(linger=0)
    return 0


