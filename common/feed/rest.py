"""Blocking REST GET with the venues' rate-limit answers turned into values (run it off the event
loop with ``run_in_executor``)."""

from __future__ import annotations

import time

import requests

#: HTTP 418 (Binance: IP auto-banned after ignoring 429s) lasts 2 min to 3 days; never retry sooner.
BAN_MIN_DELAY = 120.0
#: A 429 without ``Retry-After``.
RATE_LIMIT_DEFAULT_DELAY = 10.0


class RestError(RuntimeError):
    """A REST call failed (network, time-out, HTTP error). ``status`` is the HTTP code or None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message[:300])
        self.status = status


class RateLimited(RestError):
    """The venue told us to slow down (429) or banned us for a while (418): wait ``delay`` s."""

    def __init__(self, message: str, status: int, delay: float) -> None:
        super().__init__(message, status)
        self.delay = delay


def retry_after(status: int, header: str | None) -> float:
    """The delay to honour for a 429/418 answer: ``Retry-After`` (seconds) when given and sane,
    else a default; a 418 is never shorter than :data:`BAN_MIN_DELAY`."""
    delay = RATE_LIMIT_DEFAULT_DELAY
    if header:
        try:
            delay = max(0.0, min(float(header), 3 * 86400.0))
        except ValueError:
            pass
    if status == 418:
        delay = max(delay, BAN_MIN_DELAY)
    return delay


def get_text(session: requests.Session, url: str, timeout: float) -> tuple[bytes, int]:
    """GET ``url``; return the body and ``time.time_ns()`` when it was read. Raises
    :class:`RateLimited` on 429/418 and :class:`RestError` on anything else that is not a 200."""
    try:
        r = session.get(url, timeout=timeout)
    except requests.RequestException as e:
        raise RestError(f"GET {url}: {type(e).__name__}: {e}") from None
    rts = time.time_ns()
    if r.status_code in (429, 418):
        delay = retry_after(r.status_code, r.headers.get("Retry-After"))
        raise RateLimited(f"GET {url}: HTTP {r.status_code}", r.status_code, delay)
    if r.status_code != 200:
        raise RestError(f"GET {url}: HTTP {r.status_code}: {r.text[:200]!r}", r.status_code)
    return r.content, rts
