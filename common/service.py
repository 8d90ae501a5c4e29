"""What every service ``main`` shares: flag parsing with the config flags, logging, a clear
one-line error (exit 2) for a wrong configuration instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from common import config, logs
from common.config import Config, ConfigError


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_config_args(ap)
    return ap


def load(ap: argparse.ArgumentParser, argv: list[str] | None, name: str,
         adjust: Callable[[argparse.Namespace], list[str]] | None = None
         ) -> tuple[argparse.Namespace, Config, logging.Logger]:
    """Parse flags, load the config (``adjust`` may add ``--set`` overrides from service flags),
    set up logging. Exits with status 2 and one clear line when the config is wrong."""
    args = ap.parse_args(argv)
    if adjust is not None:
        args.sets = list(args.sets) + adjust(args)
    try:
        cfg = config.from_args(args)
    except ConfigError as e:
        print(f"{name}: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return args, cfg, logs.setup(name, cfg.log_level)
