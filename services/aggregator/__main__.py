"""python -m services.aggregator: the sequencing aggregator (see service.py)."""

from __future__ import annotations

import sys

import zmq

from common import service
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
("host:port", when set; see the README's metrics section). Example:
  python -m services.aggregator --config deploy/demo.toml --levels 20""")
    _args, cfg, log = service.load(ap, argv, "aggregator")
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
