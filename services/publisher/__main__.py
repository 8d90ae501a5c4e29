"""python -m services.publisher: fan merged top-N snapshots out to ZeroMQ SUB subscribers."""

from __future__ import annotations

import argparse
import sys

import zmq

from common import service
from common.metrics import MetricsError
from common.security import KeyError_
from services.publisher import metrics as pub_metrics
from services.publisher.service import Publisher


def main(argv: list[str] | None = None) -> int:
    ap = service.parser("python -m services.publisher", __doc__ + """

Subscribers connect a SUB socket to tcp://<bind>:<port>, subscribe to "book.BTC/USDT" (compare
the topic frame exactly: ZeroMQ matches prefixes) and receive [topic, msgpack map] messages, each
a full top-N state (see the README's subscriber contract). With publisher.latest_port (or
--latest-port) it also serves the newest book of each symbol on request to latest-only
subscribers (a ROUTER; protocol in common/schema.py, "Latest endpoint"). With
[[aggregator.shards]] it subscribes to every shard's pub and asks the shard owning a symbol to
republish it for a late joiner. Serves Prometheus
metrics, /healthz and /readyz on publisher.metrics ("host:port", when set). Example:
  python -m services.publisher --port 50052 --latest-port 50056 --levels 10""")
    ap.add_argument("--bind", default=None, help="address to bind (config publisher.bind, default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port to bind (config publisher.port, default 50052)")
    ap.add_argument("--latest-port", type=int, default=None,
                    help="port of the latest-only endpoint (config publisher.latest_port; default: none)")

    def adjust(a: argparse.Namespace) -> list[str]:
        out = []
        if a.bind:
            out.append(f"publisher.bind={a.bind!r}")
        if a.port is not None:
            out.append(f"publisher.port={a.port}")
        if a.latest_port is not None:
            out.append(f"publisher.latest_port={a.latest_port}")
        return out

    _args, cfg, log = service.load(ap, argv, "publisher", adjust)
    try:
        p = Publisher(cfg, levels=cfg.levels)
    except KeyError_ as e:
        log.error("%s", e)
        return 2
    except zmq.ZMQError as e:
        log.error("cannot bind %s or %s: %s", cfg.publisher.endpoint, cfg.publisher.latest_endpoint, e)
        return 1
    try:
        endpoint = pub_metrics.start(p)     # /metrics /healthz /readyz on publisher.metrics
    except MetricsError as e:
        log.error("%s", e)
        return 1
    try:
        p.run()
    finally:
        if endpoint is not None:
            endpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
