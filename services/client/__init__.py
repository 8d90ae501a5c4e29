"""The bookmux client: the command line (``python -m services.client``) and the client library.

The library lives in :mod:`common.subscriber` (services never import each other) and is
re-exported here::

    from services.client import subscribe
    for book in subscribe("tcp://127.0.0.1:50052", "BTC/USDT"):
        print(book.seq, book.spread, book.bids[0].price, book.venues)
"""

from common.schema import DepletionSummary, Level, MergedBook, VenueTimes
from common.subscriber import (
    AsyncSubscription,
    BookTracker,
    CurveKeys,
    QueryRefused,
    QueryTimeout,
    Subscription,
    SubscriptionTimeout,
    asubscribe,
    deplete,
    subscribe,
)

__all__ = [
    "AsyncSubscription",
    "BookTracker",
    "CurveKeys",
    "DepletionSummary",
    "Level",
    "MergedBook",
    "QueryRefused",
    "QueryTimeout",
    "Subscription",
    "SubscriptionTimeout",
    "VenueTimes",
    "asubscribe",
    "deplete",
    "subscribe",
]
