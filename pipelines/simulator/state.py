"""State that the simulated tenant's facade and its request handlers share."""

import hmac
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .faults import FaultQueue
from .ratelimit import TokenBucket
from .store import UserStore


class RequestLog:
    """Thread-safe record of the requests served to Qlik's API paths."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict] = []

    def append(self, entry: dict) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict]:
        """Return copies of the recorded requests, oldest first."""
        with self._lock:
            return [{**entry, "query": dict(entry["query"])} for entry in self._entries]

    def clear(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._entries.clear()


class LinkOrigins:
    """Maps each real `next` link served to the URL of the page that served it.

    The `repeat_next` fault uses it to point a page's `next` link back at the previous page.
    Only the most recent MAX_ENTRIES links are kept.
    """

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._origins: OrderedDict[str, str] = OrderedDict()

    def record(self, next_href: str, page_href: str) -> None:
        """Remember that the page at `page_href` linked to `next_href`."""
        with self._lock:
            self._origins[next_href] = page_href
            self._origins.move_to_end(next_href)
            while len(self._origins) > self.MAX_ENTRIES:
                self._origins.popitem(last=False)

    def origin_of(self, href: str) -> str | None:
        """Return the URL of the page whose `next` link was `href`, if it was served."""
        with self._lock:
            return self._origins.get(href)


@dataclass
class TenantState:
    """Users, faults, request log, latency and rate limit of one simulated tenant."""

    api_key: str
    store: UserStore
    faults: FaultQueue = field(default_factory=FaultQueue)
    request_log: RequestLog = field(default_factory=RequestLog)
    link_origins: LinkOrigins = field(default_factory=LinkOrigins)
    latency: float = 0.0
    # None means unlimited.
    rate_limit: TokenBucket | None = None

    def is_authorized(self, authorization: str | None) -> bool:
        """Return whether an Authorization header carries this tenant's key as a Bearer token."""
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False

        return hmac.compare_digest(token.strip().encode("utf-8"), self.api_key.encode("utf-8"))
