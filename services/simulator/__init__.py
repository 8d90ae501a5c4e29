"""A fake exchange on loopback that speaks each venue's real wire protocol (Binance, Bitstamp,
Coinbase).

Modules: ``market`` (true books, no I/O), ``venue`` (shared HTTP+WebSocket plumbing, faults),
``binance`` / ``bitstamp`` / ``coinbase`` (wire protocols), ``replay`` (serve real recordings of
all five venues), ``app`` (the
simulator object: settings, tickers, pause, faults), ``control`` (HTTP control interface), and
``__main__`` (flags). Start: ``python -m services.simulator --config deploy/demo.toml``.
See ``docs/simulator.md``.
"""
