"""SimulatedTenant, the Python API that tests use to run and steer the simulated tenant."""

import logging
import math
import threading
from types import TracebackType

from .listing import render_user
from .ratelimit import TokenBucket
from .server import SimulatorServer, validate_loopback_host
from .state import TenantState
from .store import UserStore

logger = logging.getLogger(__name__)


class SimulatedTenant:
    """A stand-in for a Qlik Cloud tenant's `GET /api/v1/users`, served on a loopback port.

    Every method is thread-safe and can be called while the server runs. Methods that return
    users return copies with the `links` and `picture` fields the API would send.

    Example:
        with SimulatedTenant(api_key="key").start() as tenant:
            tenant.seed_users(250)
            httpx.get(f"{tenant.url}/api/v1/users", headers={"Authorization": "Bearer key"})
    """

    def __init__(
        self,
        api_key: str = "sim-api-key",
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        *,
        rate_limit_per_minute: float | None = None,
        rate_limit_burst: int | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.host = validate_loopback_host(host)
        self.port = port
        self._state = TenantState(api_key=api_key, store=UserStore(seed))
        self.set_rate_limit(rate_limit_per_minute, rate_limit_burst)
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "SimulatedTenant":
        """Bind the port (0 picks a free one), start serving in a daemon thread, return self."""
        if self._server is not None:
            raise RuntimeError(f"The simulated tenant is already running at {self.url}")

        self._server = SimulatorServer((self.host, self.port), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # stop() waits up to one poll interval for the serving loop to notice.
            kwargs={"poll_interval": 0.02},
            name=f"simulated-qlik-tenant-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Simulated Qlik tenant started at %s", self.url)

        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port, unless already stopped."""
        if self._server is None:
            return

        url = self.url
        self._server.shutdown()
        self._server.close_open_connections()
        self._server.server_close()
        self._thread.join()
        self._server = None
        self._thread = None
        logger.info("Simulated Qlik tenant at %s stopped", url)

    def __enter__(self) -> "SimulatedTenant":
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL such as "http://127.0.0.1:54321", without a trailing slash."""
        if self._server is None:
            raise RuntimeError("The simulated tenant has no URL until start() is called")

        return self._server.base_url

    @property
    def api_key(self) -> str:
        """API key that requests must send as `Authorization: Bearer <api_key>`."""
        return self._state.api_key

    @property
    def latency(self) -> float:
        """Seconds added to every request to Qlik's API paths, 0 by default."""
        return self._state.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be 0 or more seconds, got {seconds}")
        self._state.latency = float(seconds)

    def set_rate_limit(self, per_minute: float | None, burst: int | None = None) -> None:
        """Limit authorized requests to Qlik's API paths, or remove the limit with None.

        Up to `burst` requests (default: `per_minute`, at least 1) pass at once, then
        `per_minute` requests a minute. A request over the limit gets 429 with `Retry-After` in
        whole seconds, rounded up, and its request log entry has `rate_limited` set. Requests
        without a valid key and requests to /_simulator/ are never limited. Setting a limit
        starts with a full bucket.

        Raises:
            ValueError: `per_minute` is not a positive number or `burst` is below 1.
        """
        if per_minute is None:
            if burst is not None:
                raise ValueError("rate_limit_burst needs rate_limit_per_minute")
            self._state.rate_limit = None
            return

        if burst is None:
            finite = isinstance(per_minute, (int, float)) and math.isfinite(per_minute)
            burst = max(1, math.floor(per_minute)) if finite else 1
        self._state.rate_limit = TokenBucket(per_minute, burst)

    @property
    def rate_limited_count(self) -> int:
        """Number of logged requests that the rate limit rejected with 429."""
        return sum(1 for entry in self._state.request_log.entries() if entry["rate_limited"])

    def seed_users(self, count: int, *, invited_share: float = 0.1) -> list[dict]:
        """Add `count` generated users, `round(count * invited_share)` of them invited.

        The others are mostly active, with a few disabled, provisioned and deleted users. The
        users depend only on the tenant's seed and on the calls made before.
        """
        return self._render(self._state.store.seed(count, invited_share=invited_share))

    def seed_users_bulk(self, count: int, *, invited_share: float = 0.1) -> int:
        """Add the same users as `seed_users` would, but return only their number.

        Use it for large tenants: it skips copying and rendering the new users, which
        roughly halves the time `seed_users` takes.
        """
        return self._state.store.seed_bulk(count, invited_share=invited_share)

    def add_user(self, name: str, email: str | None, status: str = "active", **fields) -> dict:
        """Add a user created now; `fields` set or replace other fields, such as `id` or `locale`.

        Raises:
            ValueError: the status is unknown or the id is taken.
        """
        return self._render([self._state.store.add(name, email, status, **fields)])[0]

    def invite_user(self, name: str, email: str) -> dict:
        """Add an invited user whose invite expires 7 days from now."""
        return self.add_user(name, email, status="invited")

    def activate_user(self, user_id: str) -> dict:
        """Turn an invited user into an active one, as accepting the invite does.

        Raises:
            KeyError: no user has this id.
            ValueError: the user is not invited.
        """
        return self._render([self._state.store.activate(user_id)])[0]

    def set_status(self, user_id: str, status: str) -> dict:
        """Set a user's status and update `lastUpdatedAt`.

        Raises:
            KeyError: no user has this id.
            ValueError: the status is not one of USER_STATUSES.
        """
        return self._render([self._state.store.set_status(user_id, status)])[0]

    def delete_user(self, user_id: str) -> None:
        """Remove a user, so listings no longer return it. Raises KeyError for an unknown id."""
        self._state.store.delete(user_id)

    def users(self) -> list[dict]:
        """Return copies of all users, in the order they were added."""
        return self._render(self._state.store.snapshot())

    def inject_fault(
        self, kind: str, *, page: int | None = None, times: int = 1, **options
    ) -> None:
        """Make the response for page `page` of a listing misbehave `times` times.

        Page 1 is a request without a cursor and page k the page a cursor leads to. With
        `page=None` the fault hits the next listing request, whatever its page. The kinds and
        their options are listed in the package docstring.

        Raises:
            ValueError: the kind, page, times or an option is invalid.
        """
        self._state.faults.inject(kind, page=page, times=times, **options)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._state.faults.clear()

    @property
    def requests(self) -> list[dict]:
        """Copies of the logged requests to Qlik's API paths, oldest first.

        Each entry is a dict with these keys:

        - `method`, `path` and `status` of the request and its response.
        - `query`: the query parameters. A repeated parameter keeps its last value.
        - `authorized`: whether the API key was valid. The key itself is never stored.
        - `page`: the page number of a listing request, else None.
        - `fault`: the kind of the injected fault that fired, else None.
        - `rate_limited`: whether the rate limit rejected the request with 429.

        Requests to /_simulator/ are not logged.
        """
        return self._state.request_log.entries()

    def reset_requests(self) -> None:
        """Clear the request log."""
        self._state.request_log.clear()

    def _render(self, users: list[dict]) -> list[dict]:
        base_url = self._server.base_url if self._server else f"http://{self.host}:{self.port}"
        return [render_user(user, base_url) for user in users]
