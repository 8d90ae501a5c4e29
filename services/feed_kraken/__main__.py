"""``python -m services.feed_kraken --venue kraken [--config deploy/bookmux.toml]``"""

import sys

from common.feed.cli import main

DESCRIPTION = """\
Kraken spot book feed for bookmux. Subscribes the `book` channel of every configured symbol at
the venue's `depth` (10, 25, 100, 500 or 1000) with an in-band snapshot, keeps each side truncated
to that depth, and verifies Kraken's CRC32 checksum of the top 10 levels after every message; a
mismatch resyncs that one symbol (unsubscribe, subscribe) and is logged with both checksums.
System status `maintenance` takes every symbol down; `cancel_only` / `post_only` keep the books
live and are reported. Publishes SNAP / DELTA / status / heartbeat messages on the venue's PUB
endpoint; answers snapshot requests on its ctl (ROUTER) endpoint.

The venue's `api` key picks the protocol: v2 (default; wss://ws.kraken.com/v2, names BTC/USD,
precision from the `instrument` channel) or v1 (wss://ws.kraken.com, names XBT/USD).
Examples:
  python -m services.feed_kraken --venue kraken
  python -m services.feed_kraken --venue kraken --symbols BTC/USD,ETH/USD
  python -m services.feed_kraken --config deploy/demo.toml --venue kraken
"""

if __name__ == "__main__":
    sys.exit(main("kraken", default_venue="kraken", description=DESCRIPTION))
