"""The shared ``main`` of every feed process: flags, config, logging, CPU pinning, signals, then
hand over to :class:`~common.feed.runner.FeedRunner` (on uvloop when it is installed)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence

from common import config, logs, venues
from common.config import ConfigError, add_config_args, from_args
from common.feed.runner import FeedRunner, options_doc
from common.feed.spec import FeedSpec
from common.security import KeyError_, Security


def main(kind: str | FeedSpec, argv: Sequence[str] | None = None, *, default_venue: str,
         description: str) -> int:
    """Run the feed named by ``--venue`` (a ``[venues.<id>]`` table of this ``kind``; its ``api``
    picks the spec through :mod:`common.venues`). A FeedSpec may be given instead of the kind."""
    fixed = kind if isinstance(kind, FeedSpec) else None
    kind = kind.kind if isinstance(kind, FeedSpec) else kind
    entry = venues.kind(kind)
    apis = ", ".join(f"{a} ({m})" for a, m in entry.apis.items())
    ap = argparse.ArgumentParser(
        prog=f"python -m {entry.feed}", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(f"APIs (the venue's api key; default {entry.default_api}): {apis}\n"
                "venue options ([venues.<id>.options] in the config, or --set venues.<id>.options.KEY=V), "
                "with defaults (the API adds its own):\n  " + options_doc()))
    ap.add_argument("--venue", default=default_venue,
                    help=f"the [venues.<id>] table to run; its kind must be {kind!r} "
                         "(default: %(default)s; e.g. binance_us runs Binance.US by configuration alone)")
    ap.add_argument("--shard", type=int, default=0,
                    help="which feed process of the venue to be, when [[venues.<id>.shards]] splits its "
                         "symbols over several (default: %(default)s)")
    add_config_args(ap)
    args = ap.parse_args(argv)
    try:
        cfg = from_args(args)
        vcfg = cfg.venue(args.venue).shard(args.shard)
        if vcfg.kind != kind:
            raise ConfigError(f"venues.{args.venue}.kind is {vcfg.kind!r}; this program runs {kind!r}")
        spec = fixed or venues.load_spec(kind, vcfg.api or None)
        if spec.check_config is not None:
            spec.check_config(vcfg)
        runner = FeedRunner(spec, vcfg, max_msg_size=cfg.max_msg_size, sec=Security.from_config(cfg))
    except (ConfigError, KeyError_) as e:
        config.hold_for_supervisor()    # exit 2 once supervisord takes it for an exit, not a failed start
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = logs.setup(f"feed.{vcfg.id}", cfg.log_level)
    runner.log = log
    if not vcfg.enabled:
        log.info("venue %s is disabled in %s; running it because --venue asked for it", vcfg.id, cfg.source)
    if vcfg.cpu is not None:
        try:
            os.sched_setaffinity(0, {vcfg.cpu})
            log.info("pinned to CPU %d", vcfg.cpu)
        except (OSError, AttributeError) as e:
            log.warning("could not pin to CPU %d: %s", vcfg.cpu, e)

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()

    run: Callable[..., object]
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional here
        run = asyncio.run
    run(amain())
    return 0
