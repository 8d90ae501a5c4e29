"""Coinbase level-2 feeds: Advanced Trade ``level2`` (the default, no auth, per-connection
``sequence_num``) and the Exchange feed's ``level2_batch``/``level2`` (a configured alternative,
no sequence). Pure parsing per API, shared wire helpers, and one spec per API for the feed core."""
