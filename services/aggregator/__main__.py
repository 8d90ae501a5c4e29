"""python -m services.aggregator: the sequencing aggregator (see service.py)."""

from __future__ import annotations

import sys

import zmq

from common import config, service
from common.config import ConfigError
from common.metrics import MetricsError
from common.security import KeyError_
from services.aggregator import metrics as agg_metrics
from services.aggregator.service import Aggregator


def main(argv: list[str] | None = None) -> int:
    ap = service.parser("python -m services.aggregator", __doc__ + """

Subscribes to every enabled venue's feed bus, checks each (venue, symbol) stream's sequence,
keeps one book per venue and symbol, and publishes merged top-N snapshots (topic book.<SYMBOL>)
on aggregator.pub, each with the per-symbol seq of this run's epoch. Answers depletion queries on
aggregator.query. Serves Prometheus metrics, /healthz and /readyz on aggregator.metrics
("host:port", when set; see the README's metrics section).

Scale-out: with [[aggregator.shards]] in the config, each shard is one aggregator process, run
with --shard I: it merges that shard's symbols only (it subscribes to their feed streams only and
asks snapshots for them only) and binds that shard's pub, ctl, query and metrics. The publisher
subscribes to every shard. Examples:
  python -m services.aggregator --config deploy/demo.toml --levels 20
  python -m services.aggregator --config sharded.toml --shard 1""")
    ap.add_argument("--shard", type=int, default=None, metavar="I",
                    help="which [[aggregator.shards]] process to be (required when the config has shards)")
    name = "aggregator"
    pre, _ = ap.parse_known_args(argv)
    if pre.shard is not None:
        name = f"aggregator_{pre.shard}"
    args, full, log = service.load(ap, argv, name)
    try:
        cfg = full.for_aggregator(args.shard)
    except ConfigError as e:
        config.hold_for_supervisor()    # exit 2 once supervisord takes it for an exit, not a failed start
        print(f"{name}: configuration error: {e}", file=sys.stderr)
        return 2
    if cfg.aggregator.index is not None:
        log.info("shard %d of %d: symbols %s", cfg.aggregator.index, len(full.aggregator.shards),
                 list(cfg.aggregator.symbols))
    try:
        agg = Aggregator(cfg)
    except KeyError_ as e:
        log.error("%s", e)
        return 2
    except zmq.ZMQError as e:
        log.error("cannot open sockets: %s (is another aggregator running on these endpoints?)", e)
        return 1
    try:
        endpoint = agg_metrics.start(agg)     # /metrics /healthz /readyz on aggregator.metrics
    except MetricsError as e:
        agg.close()
        log.error("%s", e)
        return 1
    try:
        agg.run()
    finally:
        if endpoint is not None:
            endpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
