"""``watch`` on a terminal: the live merged book full screen (rich), keys to move around.

    python -m services.client watch BTC/USDT            full screen when stdout is a terminal
    python -m services.client watch BTC/USDT --plain    today's plain text, one block per snapshot

Layout: :mod:`.view` is the pure core (state, redraw rate, rendering), :mod:`.source` the
subscription thread, :mod:`.app` the terminal loop, :mod:`.capture` the picture in docs/.
"""

from __future__ import annotations

import argparse
import sys

import zmq

from common import config
from common.config import SYMBOL_RE
from common.subscriber import CurveKeys, subscribe

DEFAULT_HZ = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The full-screen view's options, added to the ``watch`` sub-command."""
    g = p.add_argument_group("full-screen view (when stdout is a terminal)")
    g.add_argument("--plain", action="store_true",
                   help="plain text output (also whenever stdout is not a terminal, or with --count/--no-clear)")
    g.add_argument("--config", dest="watch_config", metavar="PATH", default=None,
                   help=f"config whose symbols the symbol keys walk through (default: {config.DEFAULT_CONFIG})")
    g.add_argument("--symbols", dest="watch_symbols", default=None, metavar="A/B,C/D",
                   help="the symbols the symbol keys walk through instead of the config's")
    g.add_argument("--levels", type=int, default=None,
                   help="levels shown per side at start (default: the config's published depth)")
    g.add_argument("--fps", type=float, default=DEFAULT_HZ,
                   help="most redraws per second, 1 to 20 (default %(default)s)")


def symbol_list(symbol: str, cfg: config.Config | None, override: str | None) -> tuple[list[str], int]:
    """The symbols to walk through and the index of ``symbol`` in it (added first if absent)."""
    if override:
        syms = [s.strip().upper() for s in override.split(",") if s.strip()]
    else:
        syms = list(cfg.all_symbols) if cfg is not None else []
    if symbol not in syms:
        syms.insert(0, symbol)
    return syms, syms.index(symbol)


def run(args: argparse.Namespace) -> int:
    """The ``watch`` command: plain output unless stdout is a terminal and nothing asks for it."""
    from services.client import watch

    try:   # a malformed endpoint is an argument error, in both views
        subscribe(args.endpoint, None).close()
    except zmq.ZMQError as e:
        print(f"watch: --endpoint {args.endpoint!r}: {e} (e.g. tcp://127.0.0.1:50052)", file=sys.stderr)
        return 2
    if args.plain or args.count or args.no_clear or not sys.stdout.isatty():
        return watch.run(args)
    symbol = args.symbol.upper()
    if not SYMBOL_RE.match(symbol):
        print(f"watch: {args.symbol!r} is not a symbol like BTC/USDT", file=sys.stderr)
        return 2
    if bool(args.server_key) != bool(args.client_key):
        print("watch: --server-key and --client-key go together (CURVE)", file=sys.stderr)
        return 2
    if not 1 <= args.fps <= 20:
        print(f"watch: --fps must be between 1 and 20, got {args.fps:g}", file=sys.stderr)
        return 2
    cfg: config.Config | None = None
    try:
        cfg = config.load(args.watch_config)
    except config.ConfigError as e:
        if args.watch_config:
            print(f"watch: {e}", file=sys.stderr)
            return 2
    if args.watch_symbols:
        bad = [s for s in args.watch_symbols.split(",") if s.strip() and not SYMBOL_RE.match(s.strip().upper())]
        if bad:
            print(f"watch: --symbols: {bad[0]!r} is not a symbol like BTC/USDT", file=sys.stderr)
            return 2
    symbols, index = symbol_list(symbol, cfg, args.watch_symbols)
    levels = args.levels if args.levels is not None else (cfg.levels if cfg is not None else 10)
    from services.client.tui import app
    from services.client.tui.view import MAX_LEVELS

    curve = None
    if args.server_key:
        try:
            curve = CurveKeys.from_files(args.server_key, args.client_key)
        except (OSError, ValueError) as e:
            print(f"watch: cannot load CURVE keys: {e}", file=sys.stderr)
            return 2
    return app.run(endpoint=args.endpoint, symbols=symbols, index=index, levels=min(max(1, levels), MAX_LEVELS),
                   max_hz=args.fps, timeout=args.timeout, curve=curve)
