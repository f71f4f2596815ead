"""The simulated tenant with a listing index built once, so each page is found by binary search.

The simulator's listing deep-copies and sorts every user on every request
(`UserStore.snapshot` and `listing.select_page`). One 100-user page of a 20,000-user tenant took
0.4 to 0.75 s to serve on a 2-core AMD EPYC, so a 1,000,000-user tenant cannot be read in a
benchmark's time. `IndexedTenant` runs the same tenant, with the same server, authentication,
latency, rate limit and request log, but builds the response to the common listing request from
users sorted once by `freeze()`:

- the default sort (`+name`), no `filter`, no `prev` cursor and no pending fault;
- every other listing request goes to the simulator's own code.

`verify_pages_match` checks that the pages it serves are byte-for-byte the simulator's.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import threading
import time

import httpx

from pipelines.simulator import SimulatedTenant
from pipelines.simulator.cursor import Cursor
from pipelines.simulator.listing import USERS_PATH, Page, parse_listing_query, render_page
from pipelines.simulator.responses import Response, json_response
from pipelines.simulator.server import SimulatorServer, TenantRequestHandler

DEFAULT_SORT = "+name"


def sort_key(value: object, user_id: str) -> tuple:
    """Order users as the simulator's listing does: missing values first, then numbers, then
    text case-insensitively, with the id breaking ties."""
    if value is None:
        return (0, 0.0, "", "", user_id)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "", "", user_id)
    text = str(value)
    return (2, 0.0, text.casefold(), text, user_id)


class ListingIndex:
    """Users sorted by name once, with their sort keys for binary search."""

    def __init__(self, users: list[dict]):
        pairs = sorted(((sort_key(user.get("name"), user["id"]), user) for user in users))
        self.keys = [key for key, _ in pairs]
        self.users = [user for _, user in pairs]


class IndexedRequestHandler(TenantRequestHandler):
    """The simulator's request handler, with the indexed listing for the common request."""

    def _listing_response(self, params: dict, raw_query: str) -> Response:
        self.server.listing_arrivals.append(time.monotonic())
        index: ListingIndex | None = self.server.listing_index
        state = self.server.state
        query = parse_listing_query(params)
        cursor = query.cursor
        simple = (
            index is not None
            and query.sort == DEFAULT_SORT
            and query.filter is None
            and (cursor is None or not cursor.backward)
            and not state.faults.pending()
        )
        if not simple:
            return super()._listing_response(params, raw_query)

        self._page_number = query.page_number
        if cursor is None or cursor.anchor_id is None:
            start = 0
        else:
            anchor = sort_key(cursor.anchor_value, cursor.anchor_id)
            if cursor.inclusive:
                start = bisect.bisect_left(index.keys, anchor)
            else:
                start = bisect.bisect_right(index.keys, anchor)
        end = min(start + query.limit, len(index.users))
        page = self._page(index, query, start, end)

        base_url = self.server.base_url
        self_href = f"{base_url}{USERS_PATH}" + (f"?{raw_query}" if raw_query else "")
        body = render_page(page, query, base_url, self_href)
        next_link = body["links"].get("next")
        if next_link is not None:
            state.link_origins.record(next_link["href"], self_href)
        return json_response(200, body)

    @staticmethod
    def _page(index: ListingIndex, query, start: int, end: int) -> Page:
        """Build the page and its cursors as `listing.select_page` does for a forward cursor."""
        users = index.users[start:end]
        number = query.page_number
        cursor = query.cursor

        def anchor(user: dict, page: int, backward: bool) -> Cursor:
            return Cursor(
                sort=query.sort,
                page=page,
                anchor_value=user.get(query.sort_field),
                anchor_id=user["id"],
                backward=backward,
            )

        next_cursor = None
        if end < len(index.users) and users:
            next_cursor = anchor(users[-1], number + 1, False)
        prev_cursor = None
        if users and start > 0:
            prev_cursor = anchor(users[0], max(1, number - 1), True)
        elif start > 0 and cursor is not None:
            prev_cursor = dataclasses.replace(
                cursor, page=max(1, number - 1), backward=True, inclusive=not cursor.inclusive
            )
        if users:
            resume_cursor = dataclasses.replace(anchor(users[0], number + 1, False), inclusive=True)
        elif cursor is not None:
            resume_cursor = dataclasses.replace(cursor, page=number + 1)
        else:
            resume_cursor = Cursor(sort=query.sort, page=number + 1)
        return Page(users, number, len(index.users), next_cursor, prev_cursor, resume_cursor)


class IndexedServer(SimulatorServer):
    """SimulatorServer whose connections use IndexedRequestHandler."""

    def __init__(self, address, state) -> None:
        super().__init__(address, state)
        self.RequestHandlerClass = IndexedRequestHandler
        self.listing_index: ListingIndex | None = None
        # time.monotonic() of each listing request that passed authentication and rate limit.
        self.listing_arrivals: list[float] = []


class IndexedTenant:
    """A SimulatedTenant served by IndexedServer on 127.0.0.1.

    Seed users, call `freeze()`, then read. Changes to the users after `freeze()` are not
    listed until the next `freeze()`.
    """

    def __init__(self, api_key: str, seed: int = 0, **rate_limit) -> None:
        self.tenant = SimulatedTenant(api_key=api_key, seed=seed, **rate_limit)
        # NOTE: reaches into SimulatedTenant's state, because the simulator has no hook to swap
        # its request handler. verify_pages_match catches a listing that drifted from it.
        self._state = self.tenant._state
        self._server: IndexedServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> IndexedTenant:
        self._server = IndexedServer(("127.0.0.1", 0), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="indexed-simulated-tenant",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_open_connections()
        self._server.server_close()
        self._thread.join()
        self._server = None
        gc.unfreeze()

    def __enter__(self) -> IndexedTenant:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.base_url

    @property
    def api_key(self) -> str:
        return self.tenant.api_key

    @property
    def latency(self) -> float:
        return self.tenant.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.tenant.latency = seconds

    @property
    def requests(self) -> list[dict]:
        return self.tenant.requests

    def reset_requests(self) -> None:
        self.tenant.reset_requests()
        self._server.listing_arrivals.clear()

    @property
    def listing_arrivals(self) -> list[float]:
        """Arrival times (time.monotonic) of the listing requests served since the last reset."""
        return list(self._server.listing_arrivals)

    def seed_users_bulk(self, count: int) -> float:
        """Add `count` seeded users and return the seconds it took."""
        started = time.perf_counter()
        with _collector_paused():
            self.tenant.seed_users_bulk(count)
        return time.perf_counter() - started

    def freeze(self) -> float:
        """Sort the current users into the listing index; return the seconds it took.

        The index shares the store's user dicts instead of copying them (a deep copy of
        1,000,000 users takes about 40 s and doubles the memory), so the users must not change
        until the next `freeze()`. Rendering a page copies each user before changing it.
        """
        started = time.perf_counter()
        self._server.listing_index = None
        store = self._state.store
        # NOTE: reads UserStore's private dict, because its public snapshot() deep-copies.
        with store._lock, _collector_paused():
            users = list(store._users.values())
        with _collector_paused():
            self._server.listing_index = ListingIndex(users)
        # Objects alive now are left out of later collections, which would otherwise walk
        # every user each time the server allocates enough to start a full collection.
        gc.freeze()
        return time.perf_counter() - started

    @property
    def listed_users(self) -> int:
        """Number of users in the listing index, as of the last `freeze()`."""
        index = self._server.listing_index
        return len(index.users) if index else 0


@contextlib.contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector, which slows building millions of dicts."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def verify_pages_match(tenant: IndexedTenant, first_url: str, pages: int) -> float:
    """Check that the first `pages` pages equal the simulator's own; return its seconds a page.

    Raises:
        AssertionError: a page body differs.
    """
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    index = tenant._server.listing_index
    url = first_url
    simulator_seconds = 0.0
    with httpx.Client(headers=headers, timeout=120, trust_env=False) as http:
        for number in range(1, pages + 1):
            indexed = http.get(url)
            tenant._server.listing_index = None
            started = time.perf_counter()
            reference = http.get(url)
            simulator_seconds += time.perf_counter() - started
            tenant._server.listing_index = index
            if indexed.content != reference.content:
                raise AssertionError(
                    f"Page {number} of the indexed listing differs from the simulator's "
                    f"({len(indexed.content)} and {len(reference.content)} bytes); the "
                    "simulator's listing changed, so update benchmarks/tenant.py"
                )
            next_link = indexed.json()["links"].get("next")
            if next_link is None:
                break
            url = next_link["href"]
    return simulator_seconds / pages
