"""``python -m services.feed_coinbase --venue coinbase [--config deploy/bookmux.toml]``"""

import sys

from common.feed.cli import main

DESCRIPTION = """\
Coinbase level-2 feed for bookmux. The venue's `api` key picks the protocol:
  advanced (default)  Advanced Trade wss://advanced-trade-ws.coinbase.com, channels level2 +
                      heartbeats, no auth. Every product's book comes in-band (snapshot event, then
                      updates); sequence_num numbers every message of the connection and a jump
                      resyncs every product of it (reconnect); a crossed book or a malformed event
                      resyncs that product alone (unsubscribe + subscribe).
  exchange            Exchange wss://ws-feed.exchange.coinbase.com, level2_batch (option
                      channel = "level2" needs auth) + heartbeat. No sequence: books resync on
                      reconnect, a crossed book and silence.
Publishes SNAP / DELTA / status / heartbeat messages on the venue's PUB endpoint; answers snapshot
requests on its ctl endpoint. Configuration (pair check on rest_url):
  [venues.coinbase]
  kind = "coinbase"
  api = "advanced"          # ws_url wss://advanced-trade-ws.coinbase.com, rest_url https://api.coinbase.com
  # api = "exchange"        # ws_url wss://ws-feed.exchange.coinbase.com, rest_url https://api.exchange.coinbase.com
Examples:
  python -m services.feed_coinbase --venue coinbase
  python -m services.feed_coinbase --config deploy/demo.toml --symbols BTC/USD,BTC/USDT
"""

if __name__ == "__main__":
    sys.exit(main("coinbase", default_venue="coinbase", description=DESCRIPTION))
