"""The users API client against the simulated tenant on 127.0.0.1."""

import datetime as dt
import logging
import time

import httpx
import pytest

from pipelines.qlik import (
    QlikAPIError,
    QlikAuthError,
    QlikClient,
    QlikConfigError,
    QlikPaginationError,
    parse_tenant_url,
    tenant_key,
)
from pipelines.qlik.client import RequestPacer, parse_retry_after
from tests.conftest import API_KEY


def make_client(tenant, **options) -> QlikClient:
    settings = {"max_attempts": 4, "wait_initial": 0.01, "wait_max": 0.05, "timeout": 5.0}
    settings.update(options)
    return QlikClient(tenant.url, API_KEY, **settings)


def read_all(client: QlikClient):
    return [page for page in client.iter_pages()]


def api_requests(tenant):
    return [request for request in tenant.requests if request["path"] == "/api/v1/users"]


def test_follows_cursor_until_last_page(tenant):
    """250 users come in three pages of at most 100, each user exactly once."""
    tenant.seed_users(250)

    with make_client(tenant) as client:
        pages = read_all(client)

    ids = [user["id"] for page in pages for user in page.users]
    assert [len(page.users) for page in pages] == [100, 100, 50]
    assert sorted(ids) == sorted(user["id"] for user in tenant.users())
    assert len(set(ids)) == 250
    assert pages[0].total_results == 250
    assert len(api_requests(tenant)) == 3


def test_requests_max_page_size_and_needed_fields(tenant):
    tenant.seed_users(5)

    with make_client(tenant) as client:
        read_all(client)

    query = api_requests(tenant)[0]["query"]
    assert query["limit"] in ("100", ["100"])
    fields = query["fields"] if isinstance(query["fields"], str) else query["fields"][0]
    assert set(fields.split(",")) >= {"id", "name", "email", "status", "createdAt"}
    assert "picture" not in fields


def test_single_empty_page_for_empty_tenant(tenant):
    with make_client(tenant) as client:
        pages = read_all(client)

    assert len(pages) == 1
    assert pages[0].users == []


@pytest.mark.parametrize("retry_after_http_date", [False, True])
def test_retries_429_after_retry_after(tenant, retry_after_http_date):
    tenant.seed_users(250)
    tenant.inject_fault(
        "429", page=2, times=1, retry_after=1, retry_after_http_date=retry_after_http_date
    )

    with make_client(tenant) as client:
        pages = read_all(client)

    statuses = [request["status"] for request in api_requests(tenant)]
    assert statuses == [200, 429, 200, 200]
    assert pages[1].attempts == 2
    assert sum(len(page.users) for page in pages) == 250


@pytest.mark.parametrize("kind", ["500", "502", "503", "504"])
def test_retries_server_errors_with_html_body(tenant, kind):
    tenant.seed_users(150)
    tenant.inject_fault(kind, page=1, times=2)

    with make_client(tenant) as client:
        pages = read_all(client)

    assert sum(len(page.users) for page in pages) == 150
    assert pages[0].attempts == 3


def test_gives_up_after_max_attempts(tenant):
    tenant.seed_users(150)
    tenant.inject_fault("503", page=2, times=10)

    with make_client(tenant, max_attempts=3) as client, pytest.raises(QlikAPIError) as raised:
        read_all(client)

    message = str(raised.value)
    assert raised.value.page == 2
    assert "Page 2" in message
    assert "3 attempts" in message
    assert "503" in message
    assert len(api_requests(tenant)) == 1 + 3


def test_retries_logged_with_reason(tenant, caplog):
    tenant.seed_users(10)
    tenant.inject_fault("502", page=1, times=1)

    with caplog.at_level(logging.WARNING, logger="pipelines"):
        with make_client(tenant) as client:
            read_all(client)

    retries = [
        record.getMessage() for record in caplog.records if "Retrying" in record.getMessage()
    ]
    assert len(retries) == 1
    assert "page 1" in retries[0]
    assert "502" in retries[0]


def test_raises_auth_error_on_401(tenant):
    tenant.seed_users(10)

    with QlikClient(tenant.url, "wrong-key-123456") as client:
        with pytest.raises(QlikAuthError) as raised:
            read_all(client)

    message = str(raised.value)
    assert raised.value.status_code == 401
    assert "QLIK_API_KEY" in message
    assert "wrong-key-123456" not in message
    assert len(api_requests(tenant)) == 1


def test_raises_auth_error_on_403_naming_role(tenant):
    tenant.seed_users(10)
    tenant.inject_fault("403", page=1, times=1)

    with make_client(tenant) as client, pytest.raises(QlikAuthError) as raised:
        read_all(client)

    assert raised.value.status_code == 403
    assert "role" in str(raised.value)
    assert API_KEY not in str(raised.value)


def test_rejects_next_link_to_other_host(tenant):
    tenant.seed_users(150)
    tenant.inject_fault("foreign_next", page=1, times=1)

    with make_client(tenant) as client, pytest.raises(QlikPaginationError) as raised:
        read_all(client)

    assert "not the tenant" in str(raised.value)
    assert len(api_requests(tenant)) == 1


def test_rejects_next_link_with_other_scheme(tenant):
    tenant.seed_users(150)
    tenant.inject_fault("scheme_next", page=1, times=1)

    with make_client(tenant) as client, pytest.raises(QlikPaginationError):
        read_all(client)

    assert len(api_requests(tenant)) == 1


def test_detects_next_link_loop(tenant):
    tenant.seed_users(350)
    tenant.inject_fault("repeat_next", page=3, times=5)

    with make_client(tenant) as client, pytest.raises(QlikPaginationError) as raised:
        read_all(client)

    assert "already read" in str(raised.value)
    assert len(api_requests(tenant)) == 3


def test_read_timeout_is_retried(tenant):
    tenant.seed_users(10)
    tenant.inject_fault("slow", page=1, times=1, delay=1.5)

    with make_client(tenant, timeout=0.5) as client:
        pages = read_all(client)

    assert len(pages[0].users) == 10
    assert pages[0].attempts == 2


def test_read_timeout_every_attempt_fails_run(tenant):
    tenant.seed_users(10)
    tenant.inject_fault("slow", page=1, times=2, delay=1.0)

    with make_client(tenant, timeout=0.3, max_attempts=2) as client:
        with pytest.raises(QlikAPIError) as raised:
            read_all(client)

    assert "Timeout" in str(raised.value)


def test_parse_tenant_url_accepts_https_and_loopback_http():
    assert str(parse_tenant_url("https://acme.eu.qlikcloud.com/")) == (
        "https://acme.eu.qlikcloud.com/"
    )
    assert parse_tenant_url("http://127.0.0.1:8080").port == 8080
    assert parse_tenant_url(" http://localhost:9 ").host == "localhost"


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "is not set"),
        ("", "is not set"),
        ("acme.eu.qlikcloud.com", "http(s) URL"),
        ("http://acme.eu.qlikcloud.com", "use https://"),
        ("https://user:pw@acme.eu.qlikcloud.com", "user name or password"),
        ("https://acme.eu.qlikcloud.com/api/v1/users", "path or query"),
        ("ftp://acme.eu.qlikcloud.com", "http(s) URL"),
    ],
)
def test_parse_tenant_url_rejects_bad_values(value, expected):
    with pytest.raises(QlikConfigError) as raised:
        parse_tenant_url(value)

    assert "QLIK_TENANT_URL" in str(raised.value)
    assert expected in str(raised.value)


def test_tenant_key_includes_explicit_port():
    assert tenant_key(httpx.URL("https://acme.eu.qlikcloud.com/")) == "acme.eu.qlikcloud.com"
    assert tenant_key(httpx.URL("http://127.0.0.1:8765/")) == "127.0.0.1_8765"


def test_parse_retry_after_seconds_and_http_date():
    now = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.timezone.utc)

    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("Fri, 04 Dec 2026 12:00:05 GMT", now) == 5.0
    assert parse_retry_after("Fri, 04 Dec 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_empty_api_key_rejected_before_any_request(tenant):
    with pytest.raises(QlikConfigError) as raised:
        QlikClient(tenant.url, "  ")

    assert "QLIK_API_KEY" in str(raised.value)
    assert api_requests(tenant) == []


class FakeClock:
    """A clock that advances only when the pacer sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_allows_burst_then_paces():
    clock = FakeClock()
    pacer = RequestPacer(per_minute=60, burst=3, clock=clock.time, sleep=clock.sleep)

    waits = [pacer.acquire() for _ in range(5)]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(1.0)
    assert waits[4] == pytest.approx(1.0)
    assert clock.now == pytest.approx(2.0)


def test_pacer_refills_while_idle():
    clock = FakeClock()
    pacer = RequestPacer(per_minute=60, burst=2, clock=clock.time, sleep=clock.sleep)
    pacer.acquire()
    pacer.acquire()

    clock.now += 10
    waits = [pacer.acquire() for _ in range(2)]

    assert waits == [0.0, 0.0]


def test_pacer_rejects_invalid_rate():
    with pytest.raises(QlikConfigError):
        RequestPacer(per_minute=0, burst=10)


def test_client_paces_requests_beyond_burst(tenant):
    tenant.seed_users(450)

    with make_client(tenant, page_size=50, requests_per_minute=600, burst=5) as client:
        started = time.monotonic()
        pages = read_all(client)
        elapsed = time.monotonic() - started

    assert len(pages) == 9
    # Four paced requests at ten a second take at least 0.4 s in all.
    assert elapsed >= 0.35
