"""An optional rate limit on Qlik's API paths: a token bucket that responds 429 when empty.

Qlik Cloud limits the users API per user and tenant (Tier 1: 1,000 requests a minute). The
simulator models that with a bucket of `burst` tokens refilled at `per_minute / 60` tokens a
second. Each request to Qlik's API paths takes one token, and a request that finds the bucket
empty gets 429 with a `Retry-After` of the whole seconds until the next token. A rejected request
takes no token.
"""

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Thread-safe token bucket: `burst` requests at once, then `per_minute` requests a minute."""

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)):
            raise ValueError(f"per_minute must be a number, got {per_minute!r}")
        if not per_minute > 0 or math.isinf(per_minute):
            raise ValueError(f"per_minute must be a positive finite number, got {per_minute}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer of 1 or more, got {burst!r}")

        self.per_minute = float(per_minute)
        self.burst = burst
        self._rate = self.per_minute / 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float | None:
        """Take one token and return None, or return the seconds until one is available."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self._rate


def retry_after_header(wait_seconds: float) -> str:
    """Format a wait as `Retry-After` whole seconds, rounded up and at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
