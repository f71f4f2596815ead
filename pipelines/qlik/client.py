"""Read the users list of a Qlik Cloud tenant, one page at a time.

`GET /api/v1/users` pages with an opaque cursor. Each response looks like:

    {"data": [{"id": "62716ab404a7bd8626af9bd6", "name": "...", ...}, ...],
     "links": {"self": {"href": "..."}, "next": {"href": "https://acme.eu.qlikcloud.com/api/v1/users?limit=100&next=..."}},
     "totalResults": 133}

The next page is the absolute URL in `links.next.href`, used unchanged; a missing, null or empty
href means the last page. The key is sent only to the tenant's own scheme, host and port.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import stamina

from pipelines.qlik.errors import (
    QlikAPIError,
    QlikAuthError,
    QlikConfigError,
    QlikPaginationError,
)

logger = logging.getLogger(__name__)

# Printable ASCII without spaces: what an HTTP header value can carry unchanged.
_API_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")

USERS_PATH = "/api/v1/users"
MAX_PAGE_SIZE = 100

# Only what the snapshot stores: asking for less makes every page smaller and keeps personal
# data we do not need (pictures, locales, groups) off our disks.
USER_FIELDS = (
    "id",
    "subject",
    "name",
    "email",
    "status",
    "createdAt",
    "lastUpdatedAt",
    "inviteExpiry",
    "assignedRoles",
)


# The users list allows 1,000 requests a minute per user and tenant (Tier 1, evaluated over 5
# minutes), shared with every other tool using the same key. Pacing keeps a margin under it.
DEFAULT_REQUESTS_PER_MINUTE = 900.0
DEFAULT_BURST = 900


class RequestPacer:
    """Token bucket: up to `burst` requests at once, then `per_minute` requests a minute.

    Tenants with fewer than `burst` pages (90,000 users by default) are never slowed down;
    larger extractions settle at the paced rate and so draw no 429.
    """

    def __init__(self, per_minute: float, burst: int, clock=time.monotonic, sleep=time.sleep):
        if per_minute <= 0 or burst < 1:
            raise QlikConfigError(
                f"Rate limit of {per_minute} requests a minute with burst {burst} is invalid; "
                "use a positive rate and a burst of at least 1"
            )
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    def acquire(self) -> float:
        """Take one request's token, sleeping until one is free; return the seconds slept."""
        waited = 0.0
        while True:
            now = self._clock()
            self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return waited
            pause = (1.0 - self.tokens) / self.rate
            self._sleep(pause)
            waited += pause


@dataclass(frozen=True)
class UsersPage:
    """One response of the users list."""

    number: int
    users: list[dict]
    total_results: int | None
    next_href: str | None
    attempts: int


class _RetryableResponse(Exception):
    """A response worth asking for again: 429, 5xx or a body mangled on the way."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def is_loopback_host(host: str) -> bool:
    """Return whether `host` names this machine (127.0.0.0/8, ::1 or localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_tenant_url(value: str | None, variable: str = "QLIK_TENANT_URL") -> httpx.URL:
    """Validate a tenant base URL such as `https://acme.eu.qlikcloud.com`.

    Raises:
        QlikConfigError: the value is missing, not a URL, uses plain http for a remote host,
            carries credentials, or has a path, query or fragment.
    """
    if value is None or not value.strip():
        raise QlikConfigError(
            f"{variable} is not set; set it to your tenant's address, "
            "for example https://acme.eu.qlikcloud.com"
        )

    text = value.strip()
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as error:
        raise QlikConfigError(
            f"{variable}={text!r} is not a valid URL ({error}); "
            "use the tenant's address, for example https://acme.eu.qlikcloud.com"
        ) from None

    if url.scheme not in ("http", "https") or not url.host:
        raise QlikConfigError(
            f"{variable}={text!r} is not an http(s) URL with a host; "
            "use the tenant's address, for example https://acme.eu.qlikcloud.com"
        )
    if url.userinfo:
        raise QlikConfigError(
            f"{variable} contains a user name or password; remove them from the URL and put "
            "the API key in QLIK_API_KEY"
        )
    if url.scheme == "http" and not is_loopback_host(url.host):
        raise QlikConfigError(
            f"{variable}={text!r} uses http:// for a remote host, which would send the API key "
            "unencrypted; use https://"
        )
    if url.port == 0:
        raise QlikConfigError(
            f"{variable}={text!r} has port 0; give the tenant's real port or none"
        )
    if url.path not in ("", "/") or url.query or url.fragment:
        raise QlikConfigError(
            f"{variable}={text!r} has a path or query; give only the tenant's base address, "
            f"for example {url.scheme}://{url.netloc.decode()}"
        )

    return url.copy_with(path="/", query=None, fragment=None)


def tenant_key(url: httpx.URL) -> str:
    """Return the name of the folder that contains one tenant's state: its host, and port if set."""
    host = url.host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.version == 6:
        # One folder per address however it is written, and no name starting with "-".
        host = "ipv6-" + address.exploded.replace(":", "-")
    return f"{host}_{url.port}" if url.port else host


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header given in seconds or as an HTTP date."""
    if value is None or not value.strip():
        return None

    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def describe_error_body(response: httpx.Response) -> str:
    """Summarize a Qlik error body (`{"errors": [{"code", "title", "detail"}]}`) in one line."""
    try:
        body = response.json()
        first = body["errors"][0]
        parts = [str(first.get(key)) for key in ("code", "title", "detail") if first.get(key)]
        if parts:
            return ": ".join(parts)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass

    content_type = response.headers.get("content-type", "unknown type").split(";")[0]
    return f"a {content_type} body of {len(response.content)} bytes"


class QlikClient:
    """Read `GET /api/v1/users` of one tenant with bounded retries.

    Retries 429 (waiting for the `Retry-After` time), 5xx, transport errors and mangled bodies, with
    exponential backoff and jitter, at most `max_attempts` times per page and `retry_timeout`
    seconds per page. Fails at once on 401, 403 and other 4xx responses.
    """

    def __init__(
        self,
        tenant_url: str,
        api_key: str,
        *,
        page_size: int = MAX_PAGE_SIZE,
        timeout: float = 30.0,
        max_attempts: int = 6,
        retry_timeout: float = 300.0,
        max_retry_after: float = 120.0,
        requests_per_minute: float | None = DEFAULT_REQUESTS_PER_MINUTE,
        burst: int = DEFAULT_BURST,
        wait_initial: float = 1.0,
        wait_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.tenant_url = parse_tenant_url(tenant_url)
        if not api_key or not api_key.strip():
            raise QlikConfigError(
                "QLIK_API_KEY is empty; create an API key in the tenant's profile settings "
                "and set it in .env or the deployment's environment"
            )
        if not _API_KEY_CHARACTERS.fullmatch(api_key.strip()):
            raise QlikConfigError(
                "QLIK_API_KEY contains a space, line break or non-ASCII character, which an "
                "HTTP header cannot carry; paste the key again on one line, without quotes"
            )
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise QlikConfigError(
                f"page_size={page_size} is outside 1..{MAX_PAGE_SIZE}, the range the users API "
                f"accepts; use {MAX_PAGE_SIZE}"
            )

        self.page_size = page_size
        self.max_attempts = max_attempts
        self.retry_timeout = retry_timeout
        self.max_retry_after = max_retry_after
        self.wait_initial = wait_initial
        self.wait_max = wait_max
        self.pacer = RequestPacer(requests_per_minute, burst) if requests_per_minute else None
        self._http = httpx.Client(
            headers={
                "Authorization": f"Bearer {api_key.strip()}",
                "Accept": "application/json",
                "User-Agent": "qlik-user-watch",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QlikClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def first_page_url(self) -> httpx.URL:
        return self.tenant_url.copy_with(
            path=USERS_PATH,
            params={
                "limit": self.page_size,
                "fields": ",".join(USER_FIELDS),
                "totalResults": "true",
            },
        )

    def iter_pages(self) -> Iterator[UsersPage]:
        """Yield every page of the users list, following `links.next.href` to the end.

        Raises:
            QlikAuthError: on 401 or 403.
            QlikPaginationError: when a next link leaves the tenant or repeats a page.
            QlikAPIError: on other errors, or when retries are used up.
        """
        url = self.first_page_url
        visited = {str(url)}
        number = 1
        empty_in_a_row = 0

        while True:
            page = self._fetch_page(url, number)
            yield page

            next_url = self._next_url(page, url, number)
            if next_url is None:
                return
            # Each empty page's next link carries a new cursor, so the visited set cannot catch
            # a tenant that keeps returning `data: []`, so those pages are bounded instead.
            empty_in_a_row = 0 if page.users else empty_in_a_row + 1
            if empty_in_a_row >= self.max_attempts:
                raise QlikPaginationError(
                    f"Page {number} and the {empty_in_a_row - 1} pages before it were empty but "
                    "each linked to a next page; the tenant's listing is not advancing, so the "
                    "run stops. "
                    "Run again later; if it persists, report it to Qlik support",
                    page=number,
                )
            if str(next_url) in visited:
                raise QlikPaginationError(
                    f"Page {number} links back to a page already read ({_safe_url(next_url)}); "
                    "the tenant's cursor is looping, so the run stops instead of reading forever. "
                    "Run again later; if it persists, report it to Qlik support",
                    page=number,
                )
            visited.add(str(next_url))
            url = next_url
            number += 1

    def _next_url(self, page: UsersPage, url: httpx.URL, number: int) -> httpx.URL | None:
        href = page.next_href
        if href is None:
            return None

        try:
            next_url = httpx.URL(href)
        except httpx.InvalidURL:
            raise QlikPaginationError(
                f"Page {number} has an invalid next link {href[:200]!r}; run again later",
                page=number,
            ) from None

        if not next_url.is_absolute_url:
            # Qlik sends absolute links; a relative one is resolved against the page's own URL.
            next_url = url.join(next_url)
        if (next_url.scheme, next_url.host, next_url.port) != (
            self.tenant_url.scheme,
            self.tenant_url.host,
            self.tenant_url.port,
        ):
            raise QlikPaginationError(
                f"Page {number} links to {next_url.scheme}://{next_url.netloc.decode()}, which is "
                f"not the tenant {self.tenant_url.scheme}://{self.tenant_url.netloc.decode()}; "
                "the API key is not sent there. Check QLIK_TENANT_URL is the tenant's canonical "
                "address (scheme, host and port)",
                page=number,
            )
        return next_url

    def _fetch_page(self, url: httpx.URL, number: int) -> UsersPage:
        started = time.monotonic()
        attempts = 0
        last_reason = ""

        try:
            for attempt in stamina.retry_context(
                on=self._backoff_hook,
                attempts=self.max_attempts,
                timeout=self.retry_timeout,
                wait_initial=self.wait_initial,
                wait_max=self.wait_max,
                wait_jitter=self.wait_initial,
            ):
                with attempt:
                    attempts = attempt.num
                    if attempts > 1:
                        logger.warning(
                            "Retrying page %d (attempt %d of %d) after: %s",
                            number,
                            attempts,
                            self.max_attempts,
                            last_reason,
                        )
                    try:
                        body = self._request_page(url, number)
                    except _RetryableResponse as error:
                        last_reason = error.reason
                        raise
                    except httpx.TransportError as error:
                        last_reason = _describe_transport_error(error)
                        raise
        except (_RetryableResponse, httpx.TransportError):
            raise self._gave_up(number, last_reason, attempts, started) from None

        return UsersPage(
            number=number,
            users=body["data"],
            total_results=_as_int(body.get("totalResults")),
            next_href=page_next_href(body),
            attempts=attempts,
        )

    def _backoff_hook(self, error: Exception) -> bool | float:
        if isinstance(error, _RetryableResponse):
            if error.retry_after is not None:
                return error.retry_after
            return True
        # A request this client cannot even build fails the same way every time.
        return isinstance(error, httpx.TransportError) and not isinstance(
            error, httpx.LocalProtocolError
        )

    def _gave_up(self, number: int, reason: str, attempts: int, started: float) -> QlikAPIError:
        elapsed = time.monotonic() - started
        return QlikAPIError(
            f"Page {number} of {_safe_url(self.tenant_url)}{USERS_PATH} failed after {attempts} "
            f"attempts in {elapsed:.0f} s; last error: {reason}. The tenant or a proxy in front "
            "of it is failing; run again later, and check the tenant's status page if it persists",
            page=number,
        )

    def _request_page(self, url: httpx.URL, number: int) -> dict:
        logger.debug("GET %s (page %d)", _safe_url(url), number)
        if self.pacer is not None:
            waited = self.pacer.acquire()
            if waited >= 1.0:
                logger.info(
                    "Paced page %d: waited %.1f s to stay under the rate limit", number, waited
                )
        response = self._http.get(url)
        status = response.status_code

        if status in (401, 403):
            raise QlikAuthError(
                _auth_message(status, self.tenant_url, response, number),
                status_code=status,
                page=number,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None and retry_after > self.max_retry_after:
                raise QlikAPIError(
                    f"Page {number}: the tenant rate-limited the API key and asked to wait "
                    f"{retry_after:.0f} s, more than the {self.max_retry_after:.0f} s this run "
                    "waits. Other tools using the same key (qlik-cli, automations, the REST "
                    "connector) share its budget; run again later",
                    status_code=status,
                    page=number,
                )
            raise _RetryableResponse(
                f"429 Too Many Requests (Retry-After: {response.headers.get('retry-after')})",
                retry_after=1.0 if retry_after is None else retry_after,
            )
        if status >= 500:
            raise _RetryableResponse(
                f"{status} {response.reason_phrase} with {describe_error_body(response)}"
            )
        if status != 200:
            raise QlikAPIError(
                f"Page {number}: GET {_safe_url(url)} returned {status} "
                f"({describe_error_body(response)}); the request was rejected, so check "
                "QLIK_TENANT_URL points at a Qlik Cloud tenant",
                status_code=status,
                page=number,
            )

        return _parse_users_body(response, number)


def page_next_href(body: dict) -> str | None:
    """Return `links.next.href`, treating a missing, null or empty link as the last page."""
    links = body.get("links")
    if not isinstance(links, dict):
        return None
    next_link = links.get("next")
    if not isinstance(next_link, dict):
        return None
    href = next_link.get("href")
    if not isinstance(href, str) or not href.strip():
        return None
    return href.strip()


def _parse_users_body(response: httpx.Response, number: int) -> dict:
    try:
        body = json.loads(response.content)
    except ValueError:
        raise _RetryableResponse(
            f"page {number} returned 200 with a body that is not valid JSON "
            f"({describe_error_body(response)}), truncated or from a proxy"
        ) from None

    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise _RetryableResponse(
            f"page {number} returned 200 with JSON that has no 'data' list of users"
        )

    for index, user in enumerate(body["data"]):
        if not isinstance(user, dict) or user.get("id") in (None, ""):
            raise _RetryableResponse(f"user #{index + 1} on page {number} has no 'id'")

    return body


def _auth_message(status: int, tenant_url: httpx.URL, response: httpx.Response, number: int) -> str:
    detail = describe_error_body(response)
    where = f"Page {number} of {_safe_url(tenant_url)}{USERS_PATH}"
    if status == 401:
        return (
            f"{where}: the tenant rejected the API key with 401 ({detail}). QLIK_API_KEY is "
            "missing, expired or revoked (deleting the key's owner revokes it): generate a new "
            "key in the tenant's profile settings under API keys and update QLIK_API_KEY"
        )
    return (
        f"{where}: the tenant answered 403 ({detail}), so the key's owner may not list all "
        "users. Give the owner a user-admin level role (and a role with the 'Manage API keys' "
        "permission to create keys), then run again"
    )


def _describe_transport_error(error: httpx.TransportError) -> str:
    kind = type(error).__name__
    if isinstance(error, httpx.LocalProtocolError):
        # Its text quotes the offending header, which may be the Authorization header.
        return f"{kind} (the request could not be built)"
    text = str(error) or "no detail"
    return f"{kind} ({text[:200]})"


def _safe_url(url: httpx.URL) -> str:
    """Return the URL without its query, since cursors are long and a query could carry secrets."""
    return str(url.copy_with(query=None, fragment=None)).rstrip("/")


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
