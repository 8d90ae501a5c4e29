"""Kraken spot book feed: WebSocket v2 (default) and v1 (configured alternative), each a pure
parser and a spec for the shared feed core; the CRC32 checksum both APIs share; the REST pair
list. See ``shared/exchanges.md`` §3 and §7."""
