"""python -m services.client: command-line client of bookmux.

  watch BTC/USDT               the live merged book: full screen on a terminal, plain text otherwise
  deplete BTC/USDT sell 15     cost of selling 15 BTC now, per venue and merged
"""

from __future__ import annotations

import argparse
import sys

from services.client import deplete_cmd, tui, watch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    watch.add_parser(sub)
    tui.add_arguments(sub.choices["watch"])
    sub.choices["watch"].set_defaults(func=tui.run)
    deplete_cmd.add_parser(sub)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
