"""The picture of the full-screen watch view in docs/: the real view of a running system, saved
as SVG and as plain text (``make watch-capture`` with ``make demo`` running).

    python -m services.client.tui.capture BTC/USDT --endpoint tcp://127.0.0.1:50052 --out docs/watch

Subscribes for ``--seconds`` (so updates per second and ages are real), then renders the last
state with the same :func:`services.client.tui.view.render` the terminal shows. Exit code 2 when
no book arrived.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from rich.console import Console

from common import config
from common.subscriber import SubscriptionTimeout, subscribe
from services.client.tui import symbol_list
from services.client.tui.view import WatchState, render


def capture(symbol: str, endpoint: str, *, symbols: list[str], levels: int, seconds: float, width: int,
            height: int) -> Console | None:
    """Watch ``symbol`` for ``seconds`` and return a recording console holding one frame of the
    view, or None when no book arrived."""
    index = symbols.index(symbol)
    state = WatchState(symbols, endpoint, levels=levels, index=index, started=time.monotonic())
    end = time.monotonic() + seconds
    with subscribe(endpoint, symbol, timeout=0.5) as sub:
        while time.monotonic() < end:
            try:
                state.on_book(sub.recv(), time.monotonic(), time.time_ns())
            except SubscriptionTimeout:
                continue
    if state.book is None:
        return None
    console = Console(record=True, width=width, height=height, force_terminal=True, color_system="truecolor",
                      file=io.StringIO())   # recorded, not shown
    console.print(render(state, time.monotonic(), time.time_ns()))
    return console


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.client.tui.capture", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("symbol", help="canonical symbol, e.g. BTC/USDT")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:50052", help="publisher endpoint (default %(default)s)")
    ap.add_argument("--config", default=None, help="config whose symbols the header lists")
    ap.add_argument("--out", default="docs/watch", help="writes OUT.svg and OUT.txt (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="watch this long first (default %(default)s)")
    ap.add_argument("--width", type=int, default=130, help="columns (default %(default)s)")
    ap.add_argument("--height", type=int, default=40, help="rows (default %(default)s)")
    args = ap.parse_args(argv)
    symbol = args.symbol.upper()
    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"capture: {e}", file=sys.stderr)
        return 2
    symbols, _ = symbol_list(symbol, cfg, None)
    console = capture(symbol, args.endpoint, symbols=symbols, levels=cfg.levels, seconds=args.seconds,
                      width=args.width, height=args.height)
    if console is None:
        print(f"capture: no book of {symbol} from {args.endpoint} in {args.seconds:g} s (is make demo running?)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = console.export_text(clear=False)
    console.save_svg(str(out.with_suffix(".svg")), title=f"python -m services.client watch {symbol}")
    out.with_suffix(".txt").write_text("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
    print(f"wrote {out.with_suffix('.svg')} and {out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
