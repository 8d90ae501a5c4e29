"""``python -m services.feed_gemini --venue gemini [--config deploy/bookmux.toml]``"""

import sys

from common.feed.cli import main

DESCRIPTION = """\
Gemini order-book feed for bookmux. The venue's `api` config key picks the protocol:

  ws (default)  the current WebSocket API at ws_url?snapshot=-1: a SUBSCRIBE of
                <symbol>@depth@100ms for each configured symbol; each symbol's first depthUpdate
                after connecting is its full book and REPLACES the local one; later ones must
                continue it (U == previous u + 1), else the feed reconnects for a new book.
  v2            market data v2 l2 (archived by Gemini): the first l2_updates per symbol (with
                "trades"/"auction_events") is the full book and replaces the local one; later
                ones are applied; no sequence numbers, so a crossed book, a malformed frame or
                silence reconnects.

A symbol whose initial book does not arrive in time reconnects. Publishes SNAP / DELTA / status /
heartbeat messages on the venue's PUB endpoint; answers snapshot requests on its ctl endpoint.
Examples:
  python -m services.feed_gemini --venue gemini
  python -m services.feed_gemini --venue gemini --symbols BTC/USD,ETH/USD
  python -m services.feed_gemini --venue gemini --set venues.gemini.api=v2 \\
      --set venues.gemini.ws_url=wss://api.gemini.com/v2/marketdata
"""

if __name__ == "__main__":
    sys.exit(main("gemini", default_venue="gemini", description=DESCRIPTION))
