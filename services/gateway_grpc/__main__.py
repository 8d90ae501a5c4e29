"""python -m services.gateway_grpc: the original challenge's gRPC stream (and bookmux's own gRPC
service) in front of the publisher.

Serves, on one port (default 50051; the ZeroMQ publisher is 50052):
  orderbook.OrderbookAggregator/BookSummary   the challenge's interface, unchanged: top N merged
                                              levels of the symbol given here, as doubles
  bookmux.Books/Subscribe, bookmux.Books/Info any carried symbol per call, exact decimal strings,
                                              venue statuses, epoch/seq, depletion summary
The protos are services/gateway_grpc/protos/*.proto. Needs the `grpc` extra (in `dev`):
pip install -e '.[grpc]'. Under `make run`/`make demo` it runs when [gateway_grpc] enabled = true.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from common import config, logs
from common.config import ConfigError
from common.security import KeyError_


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m services.gateway_grpc", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m services.gateway_grpc --base_asset BTC --quote_asset USDT --levels 10 --port 50051")
    g = ap.add_argument_group("what BookSummary serves (as in the original challenge)")
    g.add_argument("--base_asset", default=None, help="base asset, e.g. BTC (with --quote_asset)")
    g.add_argument("--quote_asset", default=None, help="quote asset, e.g. USDT (with --base_asset)")
    g.add_argument("--symbol", default=None, help="or the symbol at once, e.g. BTC/USDT "
                                                  "(config gateway_grpc.symbol; default: the first configured)")
    g.add_argument("--levels", type=int, default=None,
                   help="levels per side (config gateway_grpc.levels; default: the published depth `levels`)")
    g.add_argument("--port", type=int, default=None, help="gRPC port (config gateway_grpc.port, default 50051)")
    g.add_argument("--bind", default=None, help="address to bind (config gateway_grpc.bind, default 127.0.0.1)")
    g.add_argument("--publisher", default=None, metavar="ENDPOINT",
                   help="the ZeroMQ publisher to read (default: from config publisher.bind/port)")
    c = ap.add_argument_group("configuration")
    c.add_argument("--config", default=str(config.DEFAULT_CONFIG), help="TOML config file (default: %(default)s)")
    c.add_argument("--symbols", default=None, help="comma-separated symbols the deployment carries")
    c.add_argument("--venues", default=None, help="comma-separated venue ids to enable (others off)")
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set gateway_grpc.max_clients=200")
    c.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (config: log_level)")
    return ap


def overrides(args: argparse.Namespace) -> list[str]:
    """The gateway flags as ``--set`` overrides of ``[gateway_grpc]``; ConfigError when half a pair."""
    sets = list(args.sets)
    if (args.base_asset is None) != (args.quote_asset is None):
        raise ConfigError("--base_asset and --quote_asset go together (or give --symbol BTC/USDT)")
    symbol = args.symbol
    if args.base_asset is not None:
        pair = f"{args.base_asset.strip()}/{args.quote_asset.strip()}"
        if symbol is not None and symbol.strip().upper() != pair.upper():
            raise ConfigError(f"--symbol {symbol} and --base_asset/--quote_asset {pair} disagree")
        symbol = pair
    if symbol is not None:
        sets.append(f"gateway_grpc.symbol={symbol.strip()!r}")
    if args.levels is not None:
        sets.append(f"gateway_grpc.levels={args.levels}")
    if args.port is not None:
        sets.append(f"gateway_grpc.port={args.port}")
    if args.bind is not None:
        sets.append(f"gateway_grpc.bind={args.bind!r}")
    if args.log_level:
        sets.append(f"log_level={args.log_level!r}")
    return sets


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config.load(args.config, symbols=args.symbols or None, venues=args.venues or None,
                          sets=overrides(args))
    except ConfigError as e:
        print(f"gateway_grpc: configuration error: {e}", file=sys.stderr)
        return 2
    log = logs.setup("gateway_grpc", cfg.log_level)
    from services.gateway_grpc.stubs import StubError

    try:
        from services.gateway_grpc.server import Gateway

        gateway = Gateway(cfg, endpoint=args.publisher)
    except (StubError, ImportError) as e:
        log.error("%s (the gateway needs the grpc extra: pip install -e '.[grpc]')", e)
        return 2
    try:
        return asyncio.run(gateway.run())
    except KeyError_ as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
