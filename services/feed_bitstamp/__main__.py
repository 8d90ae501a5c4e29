"""``python -m services.feed_bitstamp --venue bitstamp [--config deploy/bookmux.toml]``"""

import sys

from common.feed.cli import main

DESCRIPTION = """\
Bitstamp diff_order_book feed for bookmux. Subscribes diff_order_book_<pair> for every configured
symbol over one connection, syncs each book from the REST order book by integer microtimestamp
(diffs at or before the snapshot are dropped), sends bts:heartbeat every few seconds, and resyncs on
reconnect, bts:request_reconnect, silence and a crossed book. Publishes SNAP / DELTA / status /
heartbeat messages on the venue's PUB endpoint; answers snapshot requests on its ctl endpoint.
Examples:
  python -m services.feed_bitstamp --venue bitstamp
  python -m services.feed_bitstamp --config deploy/demo.toml --symbols BTC/USDT
"""

if __name__ == "__main__":
    sys.exit(main("bitstamp", default_venue="bitstamp", description=DESCRIPTION))
