"""A fake exchange on loopback that speaks each venue's real wire protocol (Binance, Bitstamp).

Modules: ``market`` (true books, no I/O), ``venue`` (shared HTTP+WebSocket plumbing, faults),
``binance`` / ``bitstamp`` (wire protocols), ``replay`` (serve real recordings), ``app`` (the
simulator object: settings, tickers, pause, faults), ``control`` (HTTP control interface), and
``__main__`` (flags). Start: ``python -m services.simulator --config deploy/demo.toml``.
See ``docs/simulator.md``.
"""
