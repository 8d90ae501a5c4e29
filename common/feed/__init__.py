"""The venue-agnostic feed: pure venue specs (:mod:`.spec`, :mod:`.types`) driven by one runner
(:mod:`.runner`) that does all the I/O, with reconnect delays from :mod:`.backoff`."""
