"""Tests of the simulated Qlik tenant, run against the real server on 127.0.0.1 with httpx."""

import email.utils
import json
import re
import select
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pipelines.simulator import FAULT_KINDS, USER_STATUSES, SimulatedTenant
from pipelines.simulator.ratelimit import TokenBucket, retry_after_header

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
USERS = "/api/v1/users"
SEEDED_USERS = 250
REPO_ROOT = Path(__file__).resolve().parents[1]

# One shared context, because loading the CA certificates for every client costs about 40 ms.
# trust_env=False keeps proxy variables from routing the loopback requests elsewhere.
CLIENT_OPTIONS = {"verify": ssl.create_default_context(), "trust_env": False}


@pytest.fixture
def tenant():
    with SimulatedTenant(api_key=API_KEY, seed=7) as running:
        running.seed_users(SEEDED_USERS)
        yield running


@pytest.fixture
def client(tenant):
    with httpx.Client(base_url=tenant.url, headers=AUTH, timeout=5, **CLIENT_OPTIONS) as http:
        yield http


def http_get(url: str, **kwargs) -> httpx.Response:
    """Send one GET without the API key unless `headers` adds it."""
    return httpx.get(url, timeout=5, **CLIENT_OPTIONS, **kwargs)


def fetch_pages(client: httpx.Client, params: dict | None = None, max_pages: int = 50) -> list:
    """Follow `links.next.href` from the first page and return every page body."""
    response = client.get(USERS, params=params)
    response.raise_for_status()
    pages = [response.json()]

    while "next" in pages[-1]["links"]:
        assert len(pages) < max_pages, "the listing does not end"
        response = client.get(pages[-1]["links"]["next"]["href"])
        response.raise_for_status()
        pages.append(response.json())

    return pages


def ids_of(pages: list) -> list[str]:
    return [user["id"] for page in pages for user in page["data"]]


# Pagination


def test_listing_returns_every_user_once(client, tenant):
    """Following next links with limit 100 returns all 250 users, each exactly once."""
    pages = fetch_pages(client, {"limit": 100})

    ids = ids_of(pages)
    assert [len(page["data"]) for page in pages] == [100, 100, 50]
    assert len(ids) == len(set(ids))
    assert set(ids) == {user["id"] for user in tenant.users()}
    assert "next" not in pages[-1]["links"]


def test_default_page_is_20_by_name(client):
    """Without parameters a page has 20 users in case-insensitive name order."""
    body = client.get(USERS).json()

    names = [user["name"] for user in body["data"]]
    assert len(names) == 20
    assert names == sorted(names, key=str.casefold)
    assert "totalResults" not in body


def test_next_href_absolute_with_query(client, tenant):
    """The next link is an absolute URL on the server that repeats the query plus a cursor."""
    params = {
        "limit": "5",
        "fields": "id,name,status",
        "filter": 'status eq "active"',
        "sort": "-createdAt",
        "totalResults": "true",
    }
    body = client.get(USERS, params=params).json()

    next_href = body["links"]["next"]["href"]
    assert next_href.startswith(f"{tenant.url}{USERS}?")
    query = parse_qs(urlsplit(next_href).query)
    for name, value in params.items():
        assert query[name] == [value]
    assert len(query["next"]) == 1


def test_self_and_prev_links(client, tenant):
    """Every page links to itself, and pages after the first link back to the page before."""
    first = client.get(USERS, params={"limit": 10}).json()
    second = client.get(first["links"]["next"]["href"]).json()

    assert first["links"]["self"]["href"] == f"{tenant.url}{USERS}?limit=10"
    assert "prev" not in first["links"]
    assert second["links"]["self"]["href"] == first["links"]["next"]["href"]

    back = client.get(second["links"]["prev"]["href"]).json()
    assert [user["id"] for user in back["data"]] == [user["id"] for user in first["data"]]


def test_descending_sort_paginates_in_order(client, tenant):
    """sort=-createdAt returns all users newest first across pages."""
    pages = fetch_pages(client, {"limit": 37, "sort": "-createdAt"})

    expected = sorted(tenant.users(), key=lambda user: (user["createdAt"], user["id"]))
    assert ids_of(pages) == [user["id"] for user in reversed(expected)]


@pytest.mark.parametrize("sort", ["id", "+_id", "-email", "status", "+createdAt", " name"])
def test_supported_sorts_list_every_user(client, sort):
    """Each supported sort, with or without a sign, lists every user once."""
    ids = ids_of(fetch_pages(client, {"limit": 100, "sort": sort}))

    assert len(ids) == SEEDED_USERS
    assert len(set(ids)) == SEEDED_USERS


def test_id_sort_matches_underscore_id(client):
    """sort=_id orders users exactly as sort=id."""
    by_id = ids_of(fetch_pages(client, {"limit": 100, "sort": "id"}))
    by_underscore_id = ids_of(fetch_pages(client, {"limit": 100, "sort": "_id"}))

    assert by_id == by_underscore_id
    assert by_id == sorted(by_id)


def test_pagination_stable_while_users_change(client, tenant):
    """Keyset pagination neither repeats nor skips users that stay during the listing."""
    first = client.get(USERS, params={"limit": 100}).json()
    tenant.add_user("Aaron Early", "aaron@corp.example")
    tenant.add_user("Zygmunt Late", "zygmunt@corp.example")
    tenant.delete_user(first["data"][0]["id"])
    rest = fetch_pages_from(client, first["links"]["next"]["href"])

    ids = ids_of([first, *rest])
    names = [user["name"] for page in rest for user in page["data"]]
    assert len(ids) == SEEDED_USERS + 1
    assert len(set(ids)) == len(ids)
    assert "Zygmunt Late" in names
    assert "Aaron Early" not in names


def fetch_pages_from(client: httpx.Client, href: str) -> list:
    pages = [client.get(href).json()]
    while "next" in pages[-1]["links"]:
        pages.append(client.get(pages[-1]["links"]["next"]["href"]).json())

    return pages


# Query parameters


def test_fields_keeps_only_listed_fields(client):
    """fields=id,name returns only those keys and drops each user's links."""
    body = client.get(USERS, params={"fields": "id,name"}).json()

    assert all(set(user) == {"id", "name"} for user in body["data"])


def test_fields_with_links_keeps_self_link(client, tenant):
    """Listing links in fields keeps each user's self link."""
    body = client.get(USERS, params={"fields": "id, links"}).json()

    user = body["data"][0]
    assert set(user) == {"id", "links"}
    assert user["links"]["self"]["href"] == f"{tenant.url}{USERS}/{user['id']}"


def test_filter_on_status(client, tenant):
    """A status filter returns exactly the users with that status."""
    pages = fetch_pages(client, {"limit": 100, "filter": 'status eq "invited"'})

    expected = {user["id"] for user in tenant.users() if user["status"] == "invited"}
    assert len(expected) == 25
    assert set(ids_of(pages)) == expected
    assert all(user["status"] == "invited" for page in pages for user in page["data"])


def is_active_or_invited(user: dict) -> bool:
    return user["status"] in {"active", "invited"}


def is_invited(user: dict) -> bool:
    return user["status"] == "invited"


def has_ann_in_name(user: dict) -> bool:
    return "ann" in user["name"].casefold()


def is_active_with_ann_in_name(user: dict) -> bool:
    return has_ann_in_name(user) and user["status"] == "active"


def is_disabled(user: dict) -> bool:
    return user["status"] == "disabled"


def is_tenant_admin(user: dict) -> bool:
    return any(role["name"] == "TenantAdmin" for role in user["assignedRoles"])


@pytest.mark.parametrize(
    ("expression", "predicate"),
    [
        ('(status eq "active" or status eq "invited")', is_active_or_invited),
        ('STATUS EQ "INVITED"', is_invited),
        ('name co "ANN"', has_ann_in_name),
        ('Name Co "ann" and (status eq "active")', is_active_with_ann_in_name),
        ('email co "@corp.example" and status eq "disabled"', is_disabled),
        ('assignedRoles.name eq "TenantAdmin"', is_tenant_admin),
    ],
)
def test_filter_expressions(client, tenant, expression, predicate):
    """SCIM filters with and, or, parentheses, co and any letter case select the right users."""
    pages = fetch_pages(client, {"limit": 100, "filter": expression, "totalResults": "true"})

    expected = {user["id"] for user in tenant.users() if predicate(user)}
    assert expected
    assert set(ids_of(pages)) == expected
    assert pages[0]["totalResults"] == len(expected)


def test_filter_by_id_and_email(client, tenant):
    """id eq and email eq each find one user."""
    user = tenant.users()[42]

    by_id = client.get(USERS, params={"filter": f'id eq "{user["id"]}"'}).json()
    by_email = client.get(USERS, params={"filter": f'email eq "{user["email"].upper()}"'}).json()

    assert [found["id"] for found in by_id["data"]] == [user["id"]]
    assert [found["id"] for found in by_email["data"]] == [user["id"]]


@pytest.mark.parametrize(
    "expression",
    [
        "status eq active",
        'status eq "active" or',
        '(status eq "active"',
        'status ne "active"',
        'locale eq "en"',
        'status co "act"',
        'name eq "Bob" or status eq "active"',
        'name eq "x" & status eq "active"',
    ],
)
def test_invalid_filter_is_rejected(client, expression):
    """A filter that cannot be parsed, or that Qlik forbids, gives 400 naming the filter."""
    response = client.get(USERS, params={"filter": expression})

    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["source"]["parameter"] == "filter"
    assert error["detail"].startswith("Invalid filter")


def test_total_results_counts_matching_users(client, tenant):
    """totalResults=true reports how many users match the filter, on every page."""
    active = sum(1 for user in tenant.users() if user["status"] == "active")
    pages = fetch_pages(
        client, {"limit": 50, "totalResults": "true", "filter": 'status eq "active"'}
    )

    assert {page["totalResults"] for page in pages} == {active}
    assert client.get(USERS, params={"totalResults": "true"}).json()["totalResults"] == 250


@pytest.mark.parametrize("limit", ["0", "101", "abc", "2.5", "", "-1"])
def test_invalid_limit_is_rejected(client, limit):
    """A limit that is not an integer from 1 to 100 gives 400 naming limit."""
    response = client.get(USERS, params={"limit": limit})

    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["parameter"] == "limit"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"sort": "lastUpdatedAt"}, "sort"),
        ({"totalResults": "maybe"}, "totalResults"),
        ({"next": "not-a-cursor"}, "next"),
        ({"prev": "eyJ4IjogMX0"}, "prev"),
    ],
)
def test_invalid_parameter_is_rejected(client, params, parameter):
    """An unknown sort, a non-boolean totalResults or a forged cursor gives 400 naming it."""
    response = client.get(USERS, params=params)

    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["parameter"] == parameter


def test_cursor_from_other_sort_is_rejected(client):
    """A cursor issued for one sort is rejected with another sort."""
    next_href = client.get(USERS, params={"sort": "name"}).json()["links"]["next"]["href"]
    cursor = parse_qs(urlsplit(next_href).query)["next"][0]

    response = client.get(USERS, params={"sort": "email", "next": cursor})

    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["parameter"] == "next"


# Authentication, routes and the request log


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}]
)
def test_missing_or_wrong_key_gives_401(tenant, headers):
    """Without the right Bearer key the API returns 401 with Qlik's error body."""
    response = http_get(f"{tenant.url}{USERS}", headers=headers)

    assert response.status_code == 401
    body = response.json()
    assert body["errors"][0]["status"] == "401"
    assert body["errors"][0]["code"].startswith("USERS-")
    assert body["errors"][0]["title"]
    assert re.fullmatch(r"[0-9a-f]{32}", body["traceId"])


def test_request_log_omits_api_key(client, tenant):
    """The log records method, path, query, status and auth validity, never the key."""
    client.get(USERS, params={"limit": 3})
    http_get(f"{tenant.url}{USERS}", headers={"Authorization": "Bearer wrong"})

    entries = tenant.requests
    assert [entry["status"] for entry in entries] == [200, 401]
    assert entries[0]["query"] == {"limit": "3"}
    assert entries[0]["authorized"] is True
    assert entries[1]["authorized"] is False
    assert entries[0]["page"] == 1
    assert API_KEY not in json.dumps(entries)

    tenant.reset_requests()
    assert tenant.requests == []


def test_unknown_path_and_method_errors(client):
    """Unknown paths get a 404 error body and unsupported methods a 405."""
    not_found = client.get("/api/v1/groups")
    not_allowed = client.post(USERS, json={"name": "x"})

    assert not_found.status_code == 404
    assert not_found.json()["errors"][0]["code"] == "USERS-7"
    assert not_allowed.status_code == 405
    assert not_allowed.headers["Allow"] == "GET"


def test_user_self_link_returns_user(client):
    """A user's links.self.href returns that user."""
    user = client.get(USERS).json()["data"][0]

    fetched = client.get(user["links"]["self"]["href"])

    assert fetched.status_code == 200
    assert fetched.json() == user
    assert client.get(f"{USERS}/000000000000000000000000").status_code == 404


# Generated users


def test_seeded_users_look_like_qlik_users(tenant):
    """Seeded users have Qlik's fields and formats, including non-ASCII names."""
    users = tenant.users()
    timestamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

    for user in users:
        assert re.fullmatch(r"[0-9a-f]{24}", user["id"])
        assert user["subject"].startswith("auth0|")
        assert user["status"] in USER_STATUSES
        assert timestamp.fullmatch(user["createdAt"])
        assert timestamp.fullmatch(user["lastUpdatedAt"])
        assert ("inviteExpiry" in user) == (user["status"] == "invited")
        assert user["links"]["self"]["href"].endswith(user["id"])
        assert all(set(role) == {"id", "name", "type", "level"} for role in user["assignedRoles"])
    assert len({user["tenantId"] for user in users}) == 1
    assert len({user["id"] for user in users}) == len(users)
    assert any(not user["name"].isascii() for user in users)
    assert {user["status"] for user in users} >= {"active", "invited", "disabled"}


def test_same_seed_gives_same_users():
    """Two tenants with the same seed generate the same users."""
    first = SimulatedTenant(seed=3).seed_users(40)
    second = SimulatedTenant(seed=3).seed_users(40)
    other = SimulatedTenant(seed=4).seed_users(40)

    assert first == second
    assert [user["id"] for user in first] != [user["id"] for user in other]


def test_bulk_seed_matches_seed_users():
    """seed_users_bulk adds the users seed_users would add, with unique e-mail addresses."""
    listed = SimulatedTenant(seed=5)
    bulk = SimulatedTenant(seed=5)

    listed.seed_users(3000)
    count = bulk.seed_users_bulk(3000)

    assert count == 3000
    assert bulk.users() == listed.users()
    emails = [user["email"] for user in bulk.users()]
    assert len(set(emails)) == len(emails)


def test_non_ascii_names_round_trip(client, tenant):
    """Names outside ASCII arrive intact through the API."""
    tenant.add_user("Zoë Ångström 山田", "zoe@corp.example")

    body = client.get(USERS, params={"filter": 'name co "ångström"'}).json()

    assert [user["name"] for user in body["data"]] == ["Zoë Ångström 山田"]


# Mutations


def test_mutations_show_in_next_listing(client, tenant):
    """Added, invited, activated and deleted users show up in the following listing."""
    added = tenant.add_user("Nina New", "nina@corp.example")
    invited = tenant.invite_user("Ivan Invited", "ivan@corp.example")
    removed = tenant.users()[0]
    tenant.delete_user(removed["id"])

    listed = {user["id"]: user for user in ids_and_users(client)}
    assert listed[added["id"]]["status"] == "active"
    assert listed[invited["id"]]["status"] == "invited"
    assert removed["id"] not in listed
    assert abs(invited["inviteExpiry"] - (time.time() + 7 * 86400)) < 60

    activated = tenant.activate_user(invited["id"])
    listed = {user["id"]: user for user in ids_and_users(client)}
    assert listed[invited["id"]]["status"] == "active"
    assert "inviteExpiry" not in listed[invited["id"]]
    assert activated["lastUpdatedAt"] >= invited["lastUpdatedAt"]


def ids_and_users(client: httpx.Client) -> list[dict]:
    return [user for page in fetch_pages(client, {"limit": 100}) for user in page["data"]]


def test_set_status_updates_user(tenant):
    """set_status changes the status and stamps lastUpdatedAt with the current time."""
    user = tenant.users()[0]

    changed = tenant.set_status(user["id"], "disabled")

    assert changed["status"] == "disabled"
    updated = datetime.strptime(changed["lastUpdatedAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs(updated.replace(tzinfo=UTC).timestamp() - time.time()) < 60
    with pytest.raises(ValueError, match="Invalid status"):
        tenant.set_status(user["id"], "sleeping")


def test_unknown_user_id_raises_key_error(tenant):
    """Mutators raise KeyError naming an unknown id."""
    for mutate in (tenant.activate_user, tenant.delete_user):
        with pytest.raises(KeyError, match="nope"):
            mutate("nope")
    with pytest.raises(KeyError, match="nope"):
        tenant.set_status("nope", "active")


def test_activate_rejects_user_not_invited(tenant):
    """Only invited users can be activated."""
    user = tenant.add_user("Already Active", None)

    with pytest.raises(ValueError, match="not invited"):
        tenant.activate_user(user["id"])
    assert "email" not in user


def test_latency_delays_requests(client, tenant):
    """The latency attribute adds that many seconds to each request."""
    tenant.latency = 0.2

    started = time.monotonic()
    client.get(USERS, params={"limit": 1})

    assert time.monotonic() - started >= 0.2


# Faults


def test_fault_kinds_cover_the_matrix():
    """Every documented fault kind is available."""
    assert set(FAULT_KINDS) == {
        "429",
        "500",
        "502",
        "503",
        "504",
        "slow",
        "reset",
        "truncated_json",
        "invalid_json",
        "html_200",
        "missing_data",
        "user_without_id",
        "duplicate_id",
        "empty_page",
        "repeat_next",
        "foreign_next",
        "scheme_next",
        "401",
        "403",
        "partial",
    }


def test_429_retry_after_then_recovery(client, tenant):
    """A 429 fault sends Retry-After in seconds once, then the page is served normally."""
    tenant.inject_fault("429", retry_after=3)

    limited = client.get(USERS)
    recovered = client.get(USERS)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json()["errors"][0]["status"] == 429
    assert recovered.status_code == 200


def test_429_retry_after_http_date(client, tenant):
    """With retry_after_http_date, Retry-After is an HTTP date about retry_after from now."""
    tenant.inject_fault("429", retry_after=30, retry_after_http_date=True)

    response = client.get(USERS)

    retry_at = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    assert response.status_code == 429
    assert 25 <= retry_at.timestamp() - time.time() <= 31


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("500", "Internal Server Error"),
        ("502", "Bad Gateway"),
        ("503", "Service Unavailable"),
        ("504", "Gateway Timeout"),
    ],
)
def test_server_error_faults_send_html(client, tenant, kind, reason):
    """5xx faults send that status with an HTML body, as a proxy does."""
    tenant.inject_fault(kind)

    response = client.get(USERS)

    assert response.status_code == int(kind)
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"<h1>{kind} {reason}</h1>" in response.text


def test_fault_fires_times_then_recovers(client, tenant):
    """A fault with times=2 on page 2 spoils two requests for that page, then stops."""
    tenant.inject_fault("503", page=2, times=2)

    first = client.get(USERS, params={"limit": 100}).json()
    next_href = first["links"]["next"]["href"]
    statuses = [client.get(next_href).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert [entry["fault"] for entry in tenant.requests] == [None, "503", "503", None]
    assert [entry["page"] for entry in tenant.requests] == [1, 2, 2, 2]


def test_fault_without_page_hits_next_request(client, tenant):
    """page=None targets the next listing request, whatever its page."""
    first = client.get(USERS).json()
    tenant.inject_fault("500")

    assert client.get(first["links"]["next"]["href"]).status_code == 500
    assert client.get(first["links"]["next"]["href"]).status_code == 200


def test_fault_skips_rejected_requests(client, tenant):
    """A request rejected for its key does not use up a fault."""
    tenant.inject_fault("502")

    assert http_get(f"{tenant.url}{USERS}").status_code == 401
    assert client.get(USERS).status_code == 502


def test_slow_fault_delays_response(client, tenant):
    """A slow fault waits `delay` seconds, so a shorter client timeout fails."""
    tenant.inject_fault("slow", delay=0.3)
    started = time.monotonic()
    assert client.get(USERS).status_code == 200
    assert time.monotonic() - started >= 0.3

    tenant.inject_fault("slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        client.get(USERS, timeout=0.1)


def test_reset_fault_breaks_connection(client, tenant):
    """A reset fault closes the connection in the middle of the body."""
    tenant.inject_fault("reset")

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(USERS)
    assert client.get(USERS).status_code == 200


def test_truncated_json_fault_cuts_body(client, tenant):
    """A truncated_json fault sends half a JSON body with a matching Content-Length."""
    tenant.inject_fault("truncated_json")

    response = client.get(USERS)

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.content.startswith(b'{"data": [')
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_invalid_json_and_html_faults(client, tenant):
    """invalid_json sends a non-JSON JSON body and html_200 a sign-in page, both with 200."""
    tenant.inject_fault("invalid_json")
    tenant.inject_fault("html_200")

    invalid = client.get(USERS)
    html = client.get(USERS)

    assert invalid.status_code == 200
    assert invalid.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        invalid.json()
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html")
    assert "<form" in html.text


def test_missing_data_fault_keeps_links(client, tenant):
    """missing_data drops the data key but keeps the links."""
    tenant.inject_fault("missing_data")

    body = client.get(USERS).json()

    assert "data" not in body
    assert "next" in body["links"]


def test_user_without_id_fault(client, tenant):
    """user_without_id removes the id of one user of the page."""
    tenant.inject_fault("user_without_id")

    users = client.get(USERS).json()["data"]

    assert sum("id" not in user for user in users) == 1
    assert len(users) == 20


def test_duplicate_id_from_previous_page(client, tenant):
    """On page 2, duplicate_id gives a user the id of the last user of page 1."""
    tenant.inject_fault("duplicate_id", page=2)

    first = client.get(USERS).json()
    second = client.get(first["links"]["next"]["href"]).json()

    assert second["data"][0]["id"] == first["data"][-1]["id"]
    assert second["data"][0]["name"] != first["data"][-1]["name"]


def test_duplicate_id_fault_on_first_page(client, tenant):
    """On page 1, duplicate_id gives the last user the id of the first one."""
    tenant.inject_fault("duplicate_id", page=1)

    users = client.get(USERS).json()["data"]

    assert users[-1]["id"] == users[0]["id"]


def test_empty_page_fault_loses_no_users(client, tenant):
    """An empty page still links on, and following the links returns every user once."""
    tenant.inject_fault("empty_page", page=2)

    pages = fetch_pages(client, {"limit": 100})

    assert [len(page["data"]) for page in pages] == [100, 0, 100, 50]
    ids = ids_of(pages)
    assert len(ids) == SEEDED_USERS
    assert len(set(ids)) == len(ids)


def test_repeat_next_fault_points_back(client, tenant):
    """repeat_next links page 2 back to page 1's URL and page 1 to itself."""
    tenant.inject_fault("repeat_next", page=2)
    first_url = f"{tenant.url}{USERS}?limit=50"
    first = client.get(first_url).json()
    second = client.get(first["links"]["next"]["href"]).json()
    assert second["links"]["next"]["href"] == first_url

    tenant.inject_fault("repeat_next", page=1)
    looped = client.get(first_url).json()
    assert looped["links"]["next"]["href"] == looped["links"]["self"]["href"]


def test_foreign_and_scheme_next_faults(client, tenant):
    """foreign_next moves the next link to 127.0.0.2 and scheme_next to https."""
    port = urlsplit(tenant.url).port
    tenant.inject_fault("foreign_next")
    tenant.inject_fault("scheme_next")
    tenant.inject_fault("foreign_next", next_url="http://127.0.0.3:9/api/v1/users?next=x")

    foreign = urlsplit(client.get(USERS).json()["links"]["next"]["href"])
    scheme = urlsplit(client.get(USERS).json()["links"]["next"]["href"])
    custom = client.get(USERS).json()["links"]["next"]["href"]

    assert foreign.scheme == "http"
    assert foreign.hostname == "127.0.0.2"
    assert foreign.port == port
    assert "next=" in foreign.query
    assert scheme.scheme == "https"
    assert scheme.hostname == "127.0.0.1"
    assert scheme.port == port
    assert custom == "http://127.0.0.3:9/api/v1/users?next=x"


@pytest.mark.parametrize("kind", ["401", "403"])
def test_auth_faults_send_error_body(client, tenant, kind):
    """401 and 403 faults send that status with Qlik's error body."""
    tenant.inject_fault(kind)

    response = client.get(USERS)

    assert response.status_code == int(kind)
    assert response.json()["errors"][0]["status"] == kind


def test_partial_fault_ends_listing_early(client, tenant):
    """partial drops the next link while totalResults still counts every user."""
    tenant.inject_fault("partial", page=2)

    pages = fetch_pages(client, {"limit": 100, "totalResults": "true"})

    assert len(ids_of(pages)) == 200
    assert pages[-1]["totalResults"] == SEEDED_USERS


def test_clear_faults_drops_pending_faults(client, tenant):
    """clear_faults removes faults that have not fired yet."""
    tenant.inject_fault("500", times=5)
    tenant.clear_faults()

    assert client.get(USERS).status_code == 200


@pytest.mark.parametrize(
    ("kind", "arguments"),
    [
        ("418", {}),
        ("429", {"delay": 1}),
        ("429", {"retry_after": 1.5}),
        ("slow", {"times": 0}),
        ("slow", {"page": 0}),
    ],
)
def test_invalid_fault_is_rejected(tenant, kind, arguments):
    """An unknown kind, an unknown option or a bad page, times or value raises ValueError."""
    with pytest.raises(ValueError):
        tenant.inject_fault(kind, **arguments)


# Admin API and CLI


def test_admin_api_changes_users_and_faults(client, tenant):
    """The /_simulator/ API adds, invites, activates and deletes users and injects faults."""
    created = client.post("/_simulator/users", json={"name": "Ada", "email": "ada@corp.example"})
    invited = client.post("/_simulator/invites", json={"name": "Ian", "email": "ian@corp.example"})
    assert created.status_code == 201
    assert invited.status_code == 201
    assert invited.json()["status"] == "invited"

    created_path = f"/_simulator/users/{created.json()['id']}"
    activated = client.post(f"/_simulator/users/{invited.json()['id']}/activate")
    disabled = client.post(f"{created_path}/status", json={"status": "disabled"})
    assert activated.json()["status"] == "active"
    assert disabled.json()["status"] == "disabled"
    assert client.delete(created_path).status_code == 204
    assert client.delete(created_path).status_code == 404
    assert len(client.get("/_simulator/users").json()["data"]) == SEEDED_USERS + 1

    fault = {"kind": "503", "page": 1, "times": 2}
    assert client.post("/_simulator/faults", json=fault).status_code == 201
    assert client.get("/_simulator/faults").json()["data"] == [fault]
    assert client.get(USERS).status_code == 503
    assert client.delete("/_simulator/faults").status_code == 204
    assert client.get(USERS).status_code == 200


def test_admin_api_rejects_bad_requests(client, tenant):
    """The admin API needs the key and validates its input."""
    assert http_get(f"{tenant.url}/_simulator/requests").status_code == 401
    assert client.post("/_simulator/faults", json={"kind": "nope"}).status_code == 400
    assert client.post("/_simulator/users", json={"email": "x@corp.example"}).status_code == 400
    assert client.post("/_simulator/users", content=b"{not json").status_code == 400
    assert client.put("/_simulator/faults").status_code == 405


def test_admin_requests_are_not_logged(client, tenant):
    """GET /_simulator/requests returns the API requests and leaves admin calls out."""
    client.get(USERS)
    client.post("/_simulator/invites", json={"name": "Ian", "email": "ian@corp.example"})

    entries = client.get("/_simulator/requests").json()["data"]

    assert [entry["path"] for entry in entries] == [USERS]
    assert len(tenant.requests) == 1


def test_avatar_is_served_without_key(tenant):
    """Each user's picture URL returns an SVG avatar without the API key."""
    user = tenant.users()[0]

    response = http_get(user["picture"])

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("image/svg+xml")


def test_non_loopback_host_is_rejected():
    """The tenant rejects any host that is not a loopback address."""
    for host in ("0.0.0.0", "10.1.2.3", "example.com", "::1"):
        with pytest.raises(ValueError, match="loopback"):
            SimulatedTenant(host=host)


def test_stop_closes_port():
    """After stop() the port no longer accepts connections."""
    tenant = SimulatedTenant().start()
    url = tenant.url
    with httpx.Client(**CLIENT_OPTIONS) as http:
        assert http.get(f"{url}{USERS}").status_code == 401
        tenant.stop()
        with pytest.raises(httpx.ConnectError):
            http_get(f"{url}{USERS}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serves_until_terminated():
    """The CLI prints its URL, serves the seeded users and exits cleanly on SIGTERM."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "pipelines.simulator",
        "--port",
        str(port),
        "--seed-users",
        "30",
        "--api-key",
        "cli-key",
    ]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "the CLI printed nothing within 10 seconds"
        line = process.stdout.readline().strip()
        assert line == f"Simulated Qlik tenant at http://127.0.0.1:{port}"

        response = http_get(
            f"http://127.0.0.1:{port}{USERS}",
            params={"totalResults": "true"},
            headers={"Authorization": "Bearer cli-key"},
        )
        assert response.json()["totalResults"] == 30
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()

    assert process.returncode == 0


def test_cli_rejects_non_loopback_host():
    """The CLI exits with a usage error for a host outside 127.0.0.0/8."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.simulator", "--host", "0.0.0.0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )

    assert result.returncode == 2
    assert "loopback" in result.stderr


# Rate limit


@pytest.fixture
def limited_tenant():
    """A tenant that allows 3 requests at once, then 1 a minute, so no token refills in a test."""
    with SimulatedTenant(
        api_key=API_KEY, seed=7, rate_limit_per_minute=1, rate_limit_burst=3
    ) as running:
        running.seed_users(30)
        yield running


def test_rate_limit_answers_429_over_burst(limited_tenant):
    """Past the burst, a request gets 429 with Retry-After and Qlik's error body."""
    with httpx.Client(base_url=limited_tenant.url, headers=AUTH, **CLIENT_OPTIONS) as http:
        statuses = [http.get(USERS).status_code for _ in range(3)]
        limited = http.get(USERS)

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["errors"][0]["status"] == 429


def test_rate_limit_logged_per_request(limited_tenant):
    """The request log marks each rate-limited request and the tenant counts them."""
    with httpx.Client(base_url=limited_tenant.url, headers=AUTH, **CLIENT_OPTIONS) as http:
        for _ in range(5):
            http.get(USERS)

    entries = limited_tenant.requests
    assert [entry["status"] for entry in entries] == [200, 200, 200, 429, 429]
    assert [entry["rate_limited"] for entry in entries] == [False, False, False, True, True]
    assert [entry["fault"] for entry in entries] == [None] * 5
    assert limited_tenant.rate_limited_count == 2


def test_rate_limit_skips_rejected_and_admin(limited_tenant):
    """Requests without a valid key and /_simulator/ requests take no token."""
    for _ in range(5):
        assert http_get(f"{limited_tenant.url}{USERS}").status_code == 401
    with httpx.Client(base_url=limited_tenant.url, headers=AUTH, **CLIENT_OPTIONS) as http:
        for _ in range(5):
            assert http.get("/_simulator/requests").status_code == 200
        statuses = [http.get(USERS).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_rate_limit_fault_untouched(limited_tenant):
    """A rate-limited request leaves pending faults for the next request that passes."""
    limited_tenant.set_rate_limit(1, burst=1)
    with httpx.Client(base_url=limited_tenant.url, headers=AUTH, **CLIENT_OPTIONS) as http:
        assert http.get(USERS).status_code == 200
        limited_tenant.inject_fault("503")
        assert http.get(USERS).status_code == 429
        limited_tenant.set_rate_limit(None)
        assert http.get(USERS).status_code == 503


def test_rate_limit_off_by_default(client, tenant):
    """Without a limit, many quick requests all succeed."""
    statuses = {client.get(USERS, params={"limit": 1}).status_code for _ in range(30)}

    assert statuses == {200}
    assert tenant.rate_limited_count == 0


def test_token_bucket_refills_at_rate():
    """The bucket allows `burst` at once, refills per_minute/60 tokens a second, up to burst."""
    now = [100.0]
    bucket = TokenBucket(60, 2, clock=lambda: now[0])

    assert bucket.take() is None
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(1.0)
    now[0] += 0.5
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() is None
    now[0] += 100
    assert bucket.take() is None
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("wait", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")]
)
def test_retry_after_rounds_up(wait, header):
    """Retry-After is whole seconds, rounded up and at least 1."""
    assert retry_after_header(wait) == header


@pytest.mark.parametrize(
    ("per_minute", "burst"),
    [(0, 1), (-5, 1), (float("nan"), 1), (float("inf"), 1), ("600", 1), (600, 0), (600, 2.5)],
)
def test_invalid_rate_limit_is_rejected(per_minute, burst):
    """A non-positive or non-numeric rate, or a burst below 1, raises ValueError."""
    with pytest.raises(ValueError):
        SimulatedTenant(rate_limit_per_minute=per_minute, rate_limit_burst=burst)


@pytest.mark.parametrize("per_minute", [0, float("nan"), float("inf"), "600"])
def test_invalid_rate_without_burst_is_rejected(per_minute):
    """Without a burst, an invalid rate still raises ValueError, not another error."""
    with pytest.raises(ValueError):
        SimulatedTenant(rate_limit_per_minute=per_minute)


def test_rate_limit_burst_defaults_to_rate(tenant):
    """Without a burst, one minute of requests passes at once."""
    tenant.set_rate_limit(2)
    with httpx.Client(base_url=tenant.url, headers=AUTH, **CLIENT_OPTIONS) as http:
        statuses = [http.get(USERS, params={"limit": 1}).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_rate_limit_burst_needs_rate():
    """A burst without a per-minute rate raises ValueError."""
    with pytest.raises(ValueError, match="rate_limit_per_minute"):
        SimulatedTenant(rate_limit_burst=10)


def test_cli_rate_limit_options():
    """--rate-limit-per-minute and --rate-limit-burst limit the CLI's tenant."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "pipelines.simulator",
        "--port",
        str(port),
        "--api-key",
        "cli-key",
        "--rate-limit-per-minute",
        "1",
        "--rate-limit-burst",
        "2",
    ]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "the CLI printed nothing within 10 seconds"
        process.stdout.readline()

        headers = {"Authorization": "Bearer cli-key"}
        statuses = [
            http_get(f"http://127.0.0.1:{port}{USERS}", headers=headers).status_code
            for _ in range(3)
        ]
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()

    assert statuses == [200, 200, 429]
