"""``watch``: subscribe to the publisher and print the live merged book (plain text view), through
the client library (:mod:`common.subscriber`)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common.numbers import fmt
from common.schema import MergedBook
from common.subscriber import CurveKeys, SubscriptionTimeout, subscribe


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


def render(book: MergedBook, now_ns: int | None = None) -> str:
    """One snapshot as text: header, venue statuses, bids and asks side by side, the streamed
    depletion summary (decimals in the wire's canonical text)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    age_ms = (now_ns - book.ts) / 1e6 if book.ts else float("nan")
    venues = "  ".join(f"{v}:{st}" for v, st in sorted(book.venues.items()))
    lines = [f"{book.symbol}  spread {fmt(book.spread) if book.spread is not None else '-'}  "
             f"epoch {book.epoch} seq {book.seq}  age {age_ms:.1f} ms",
             f"venues  {venues}",
             f"{'BID venue':>12} {'amount':>16} {'price':>14} | {'price':<14} {'amount':<16} {'ASK venue':<12}"]
    bids = [(fmt(p), fmt(a), v) for p, a, v in book.bids]
    asks = [(fmt(p), fmt(a), v) for p, a, v in book.asks]
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else ("", "", "")
        a = asks[i] if i < len(asks) else ("", "", "")
        lines.append(f"{b[2]:>12} {b[1]:>16} {b[0]:>14} | {a[0]:<14} {a[1]:<16} {a[2]:<12}")
    for side in ("buy", "sell"):
        parts = []
        for size, d in ((book.depletion or {}).get(side) or {}).items():
            if d.vwap is None:
                parts.append(f"{fmt(size)}: no liquidity")
                continue
            partial = f" PARTIAL {fmt(d.filled)}" if d.partial else ""
            bps = "None" if d.slippage_bps is None else fmt(d.slippage_bps)
            parts.append(f"{fmt(size)} @ {fmt(d.vwap)} ({bps} bps, {d.levels} lv){partial}")
        if parts:
            lines.append(f"{side:>4} " + "  |  ".join(parts))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if bool(args.server_key) != bool(args.client_key):
        print("watch: --server-key and --client-key go together (CURVE)", file=sys.stderr)
        return 2
    try:
        curve = CurveKeys.from_files(args.server_key, args.client_key) if args.server_key else None
    except (OSError, ValueError) as e:
        print(f"watch: cannot load CURVE keys: {e}", file=sys.stderr)
        return 2
    try:
        # At most one warning a second, as before the library (its timeout 0 means "do not wait").
        sub = subscribe(args.endpoint, args.symbol, timeout=max(args.timeout, 1.0), curve=curve)
    except ValueError:
        print(f"watch: {args.symbol!r} is not a symbol like BTC/USDT", file=sys.stderr)
        return 2
    clear = sys.stdout.isatty() and not args.no_clear
    print(f"subscribed to book.{sub.symbols[0]} on {args.endpoint}; waiting for the first snapshot...", flush=True)
    got = 0
    try:
        with sub:
            while args.count == 0 or got < args.count:
                try:
                    book = sub.recv()
                except SubscriptionTimeout:
                    print(f"nothing received for {args.timeout:.0f} s: is the publisher running on "
                          f"{args.endpoint}?", file=sys.stderr, flush=True)
                    continue
                got += 1
                print(("\x1b[H\x1b[2J" if clear else "\n") + render(book), flush=True)
    except KeyboardInterrupt:
        pass
    return 0
