"""``python -m services.feed_binance --venue binance [--config deploy/bookmux.toml]``"""

import sys

from common.feed.cli import main

DESCRIPTION = """\
Binance spot diff-depth feed for bookmux. Subscribes <symbol>@depth@100ms for every configured
symbol over one combined-stream connection, syncs each book from the REST depth snapshot by the
documented lastUpdateId / U / u rule, and publishes SNAP / DELTA / status / heartbeat messages on
the venue's PUB endpoint; answers snapshot requests on its ctl (ROUTER) endpoint.

Binance.US is the same program: --venue binance_us picks the [venues.binance_us] table.
Examples:
  python -m services.feed_binance --venue binance
  python -m services.feed_binance --venue binance_us --symbols BTC/USDT,ETH/USDT
  python -m services.feed_binance --config deploy/demo.toml --venue binance
"""

if __name__ == "__main__":
    sys.exit(main("binance", default_venue="binance", description=DESCRIPTION))
