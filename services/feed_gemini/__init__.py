"""Gemini feed: the current WebSocket API (``wss://ws.gemini.com``, ``<symbol>@depth@100ms`` whose
first event per symbol is the full book, then ``U``/``u``-contiguous diffs; :mod:`.spec_ws`, the
live default) and market data v2 ``l2`` (in-band initial book, no sequence; :mod:`.spec_v2`, the
configured alternative the real recording exercises). Pure parsing and sync rules; the shared
feed core in :mod:`common.feed` does the I/O."""
