"""``deplete``: how an order of a given size would deplete each venue's book and the merged book.

    python -m services.client deplete BTC/USDT sell 15
    python -m services.client deplete BTC/USDT buy 100000 --notional
    python -m services.client deplete BTC/USDT buy 2 --venue binance --json

Asks the aggregator's query endpoint through the client library (:func:`common.subscriber.deplete`;
protocol in :mod:`common.query`) and prints, like the original tool: a summary line, one block per
venue (its full book), one block for the merged book (as subscribers see it), then the fills per
venue. Exit codes: 0 answered, 2 bad arguments, no answer in time, or an error reply.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, TextIO

from common import config
from common.numbers import fmt
from common.query import QueryError, Reply
from common.subscriber import CurveKeys, QueryRefused, QueryTimeout, deplete


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("deplete", help="cost of a market order now, per venue and merged",
                       description="How an order of this size would deplete each venue's book and the merged "
                                   "book (a sell takes bids, a buy takes asks).")
    p.add_argument("symbol", help="canonical symbol, e.g. BTC/USDT")
    p.add_argument("side", type=str.lower, choices=("buy", "sell"), help="buy takes asks, sell takes bids")
    p.add_argument("amount", help="size in base units (e.g. 15 BTC), or in quote units with --notional")
    p.add_argument("--notional", action="store_true",
                   help="AMOUNT is quote units to spend (buy) or raise (sell), e.g. 100000 USDT")
    p.add_argument("--venue", default=None,
                   help="only this venue's full book (default: every venue and the merged book)")
    p.add_argument("--json", action="store_true", help="print the reply as JSON (for scripts)")
    p.add_argument("--endpoint", default=None,
                   help="aggregator query endpoint (default: aggregator.query of --config, "
                        "tcp://127.0.0.1:50053 in deploy/bookmux.toml; with [[aggregator.shards]] the "
                        "query endpoint of the shard owning the symbol)")
    p.add_argument("--config", dest="deplete_config", metavar="PATH", default=str(config.DEFAULT_CONFIG),
                   help="config file to read the endpoint from (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=3.0,
                   help="seconds to wait for the answer (default %(default)s)")
    p.add_argument("--server-key", default=None, metavar="PATH",
                   help="CURVE: the aggregator's public key file (keys/server.key); enables encryption")
    p.add_argument("--client-key", default=None, metavar="PATH",
                   help="CURVE: our secret key file, whose public key the aggregator allows "
                        "(keys/subscriber.key_secret)")
    p.set_defaults(func=run)
    return p


# --- rendering (pure) -------------------------------------------------------------------------


#: Human output shows at most this many decimals (``≈`` marks a rounded value); --json is exact.
SHOWN_DECIMALS = 12


def _h(text: str | None) -> str:
    """A wire decimal for people: exact unless it has more than :data:`SHOWN_DECIMALS` decimals."""
    if text is None:
        return "-"
    frac = text.partition(".")[2]
    if len(frac) <= SHOWN_DECIMALS:
        return text
    q = Decimal(text).quantize(Decimal(1).scaleb(-SHOWN_DECIMALS), rounding=ROUND_HALF_EVEN,
                               context=Context(prec=80))
    return "≈" + fmt(q)


def _assets(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote


def _tree(title: str, rows: list[tuple[str, str]]) -> list[str]:
    lines = [title]
    for i, (k, v) in enumerate(rows):
        lines.append(f"{'└──' if i == len(rows) - 1 else '├──'} {k:<14} {v}")
    return lines


def _block(title: str, d: dict[str, Any], symbol: str, *, split: bool = False) -> list[str]:
    base, quote = _assets(symbol)
    if d["mode"] == "notional":
        want = f"{d['requested']} {quote}"
        got = f"{_h(d['filled'])} {base} for {_h(d['notional'])} {quote}"
    else:
        want = f"{d['requested']} {base}"
        got = f"{_h(d['filled'])} {base}"
    state = "PARTIAL: the book ran out" if d["partial"] else "complete"
    levels = str(d["levels"])
    if split and len(d["venues"]) > 0:
        levels += "  (" + ", ".join(f"{v} {s['levels']}" for v, s in d["venues"].items()) + ")"
    rows = [("levels", levels), ("filled", f"{got} of {want}  [{state}]")]
    if d["filled"] != "0":
        rows += [("VWAP", d["vwap"]), ("best", d["best"]), ("worst", d["worst"]),
                 ("slippage", f"{d['slippage']} ({d['slippage_bps']} bps)")]
        if d["mode"] == "quantity":
            rows.append(("notional", f"{_h(d['notional'])} {quote}"))
        if d.get("vwap_fee") is not None:
            rows.append(("avg incl. fee", f"{d['vwap_fee']} (fee {_h(d['fee'])} {quote})"))
        if split and len(d["venues"]) > 1:
            rows.append(("split", ", ".join(f"{v} {_h(s['filled'])} {base} @ {s['vwap']}"
                                            for v, s in d["venues"].items())))
    elif d["best"] is None:
        rows.append(("book", "empty"))
    if d.get("beyond_known_depth"):
        rows.append(("known depth", f"PAST IT: the book is exact only down to {d.get('exact_to')}; "
                                    "deeper levels may be missing (the venue caps its depth)"))
    return _tree(title, rows)


def _fills(fills: list[list[str]]) -> str:
    return "[" + ", ".join(f"({p}, {_h(a)})" for p, a, _ in fills) + "]"


def render(reply: Reply) -> str:
    """A successful reply as the human-readable report."""
    d0 = reply.merged if reply.merged is not None else next(iter(reply.venues.values()), None)
    base, quote = _assets(reply.symbol)
    lines: list[str] = []
    if d0 is not None:
        takes = "takes asks" if d0["side"] == "buy" else "takes bids"
        unit = quote if d0["mode"] == "notional" else base
        lines.append(f"{d0['side']} {d0['requested']} {unit} of {reply.symbol} (a {d0['side']} {takes}), "
                     f"books of epoch {reply.epoch} seq {reply.seq}")
    for venue, d in reply.venues.items():
        lines += _block(f"{venue} [{reply.statuses.get(venue, '?')}]", d, reply.symbol)
    if reply.merged is not None:
        live = [v for v, st in reply.statuses.items() if st == "live"]
        lines += _block(f"merged [{', '.join(live) or 'no live venue'}; dust filtered]", reply.merged,
                        reply.symbol, split=True)
    if reply.venues:
        lines.append("fills per venue (price, amount)")
        for venue, d in reply.venues.items():
            lines.append(f"  {venue}: {_fills(d['fills'])}")
    elif reply.merged is not None:
        lines.append("merged fills per venue (price, amount)")
        by: dict[str, list[list[str]]] = {}
        for f in reply.merged["fills"]:
            by.setdefault(f[2], []).append(f)
        for venue, fs in by.items():
            lines.append(f"  {venue}: {_fills(fs)}")
    return "\n".join(lines)


# --- running ----------------------------------------------------------------------------------


def _endpoint(args: argparse.Namespace) -> str | dict[str, str]:
    """--endpoint, else the config's query endpoint; with [[aggregator.shards]] symbol -> the
    query endpoint of the shard that owns it (the request goes to the owner of the symbol)."""
    if args.endpoint:
        return str(args.endpoint)
    agg = config.load(args.deplete_config).aggregator
    return agg.query_routes() if agg.shards else agg.query


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if bool(args.server_key) != bool(args.client_key):
        print("deplete: --server-key and --client-key go together (CURVE)", file=err)
        return 2
    try:
        curve = CurveKeys.from_files(args.server_key, args.client_key) if args.server_key else None
        endpoint = _endpoint(args)
        reply = deplete(endpoint, args.symbol, args.side, args.amount, notional=args.notional, venue=args.venue,
                        all_venues=not args.venue, timeout=args.timeout, curve=curve)
    except QueryRefused as e:
        print(f"deplete: the aggregator says: {e}", file=err)
        return 2
    except (QueryError, QueryTimeout, config.ConfigError) as e:
        print(f"deplete: {e}", file=err)
        return 2
    except (OSError, ValueError) as e:
        print(f"deplete: cannot load CURVE keys: {e}", file=err)
        return 2
    if args.json:
        print(json.dumps(reply.raw, indent=2), file=out)
    else:
        print(render(reply), file=out)
    return 0
