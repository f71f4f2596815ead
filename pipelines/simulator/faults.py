"""Fault injection: listing responses that misbehave the way a real tenant or its proxy can.

A fault targets one page of a listing (page 1 is a request without a cursor, page k is the page
a cursor names) or, with `page=None`, the next listing request whatever its page. It fires
`times` times and is then used up, so a client that retries eventually gets a normal page.
Faults apply only to `GET /api/v1/users` requests that pass authentication and validation.
"""

import copy
import email.utils
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from .responses import Response, error_response, html_response

# Every fault kind, with the options it accepts and their defaults.
FAULT_OPTIONS: dict[str, dict[str, object]] = {
    "429": {"retry_after": 1, "retry_after_http_date": False},
    "500": {},
    "502": {},
    "503": {},
    "504": {},
    "slow": {"delay": 2.0},
    "reset": {},
    "truncated_json": {},
    "invalid_json": {},
    "html_200": {},
    "missing_data": {},
    "user_without_id": {},
    "duplicate_id": {},
    "empty_page": {},
    "repeat_next": {},
    "foreign_next": {"next_url": None},
    "scheme_next": {},
    "401": {},
    "403": {},
    "partial": {},
}
FAULT_KINDS = tuple(FAULT_OPTIONS)

# Loopback address other than the one the simulator binds, used as the foreign host by default.
FOREIGN_HOST = "127.0.0.2"

SERVER_ERROR_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
LOGIN_PAGE = """<!DOCTYPE html>
<html><head><title>Sign in</title></head>
<body><h1>Sign in to continue</h1>
<form method="post" action="/login">
<label>User name <input name="username"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button>
</form></body></html>
"""
# Python's repr of a dict, a common way to send something that looks like JSON but is not.
INVALID_JSON_BODY = b"{'data': [], 'links': {'self': None}}"


@dataclass
class Fault:
    """One injected fault and how many more responses it spoils."""

    kind: str
    page: int | None
    remaining: int
    options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Return the fault as JSON-ready data."""
        return {"kind": self.kind, "page": self.page, "times": self.remaining, **self.options}


@dataclass(frozen=True)
class FaultContext:
    """URLs around the faulty page that link faults point at."""

    self_href: str
    resume_href: str
    previous_href: str | None
    anchor_id: str | None


class FaultQueue:
    """Thread-safe queue of pending faults, in the order they were injected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def inject(self, kind: str, *, page: int | None = None, times: int = 1, **options) -> None:
        """Queue a fault after checking its kind, page, times and options."""
        fault = Fault(kind, page, times, _validate_options(kind, options))
        if page is not None and (not _is_int(page) or page < 1):
            raise ValueError(f"page must be None or an integer of 1 or more, got {page!r}")
        if not _is_int(times) or times < 1:
            raise ValueError(f"times must be an integer of 1 or more, got {times!r}")

        with self._lock:
            self._faults.append(fault)

    def take(self, page_number: int) -> Fault | None:
        """Use up one firing of the first fault that targets this page, and return it."""
        with self._lock:
            for fault in self._faults:
                if fault.page is None or fault.page == page_number:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return copy.deepcopy(fault)

        return None

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict]:
        """Return the pending faults as JSON-ready data."""
        with self._lock:
            return [fault.as_dict() for fault in self._faults]


def response_before_listing(fault: Fault) -> Response | None:
    """Build the response of a fault that replaces the page entirely, or return None."""
    if fault.kind == "429":
        retry_after = fault.options["retry_after"]
        header = str(retry_after)
        if fault.options["retry_after_http_date"]:
            header = email.utils.formatdate(time.time() + retry_after, usegmt=True)
        response = error_response(
            429, f"Rate limit exceeded for the users API; retry after {retry_after} seconds"
        )
        response.headers["Retry-After"] = header
        return response

    if fault.kind in ("500", "502", "503", "504"):
        status = int(fault.kind)
        title = f"{status} {SERVER_ERROR_REASONS[status]}"
        html = (
            f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
            "<p>The proxy in front of the tenant could not complete the request.</p>"
            "</body></html>\n"
        )
        return html_response(status, html)

    if fault.kind == "401":
        return error_response(401, "The API key is missing, invalid or expired")
    if fault.kind == "403":
        return error_response(403, "The owner of the API key is not allowed to list users")
    if fault.kind == "html_200":
        return html_response(200, LOGIN_PAGE)
    if fault.kind == "invalid_json":
        return Response(200, INVALID_JSON_BODY)

    return None


def apply_to_body(fault: Fault, body: dict, context: FaultContext) -> None:
    """Spoil the data or the links of a rendered page, for the faults that do that."""
    data = body.get("data", [])
    links = body["links"]

    if fault.kind == "missing_data":
        del body["data"]
    elif fault.kind == "user_without_id" and data:
        data[0].pop("id", None)
    elif fault.kind == "duplicate_id":
        _duplicate_id(data, context.anchor_id)
    elif fault.kind == "empty_page":
        body["data"] = []
        links["next"] = {"href": context.resume_href}
    elif fault.kind == "repeat_next":
        links["next"] = {"href": context.previous_href or context.self_href}
    elif fault.kind == "foreign_next":
        real_href = links.get("next", {}).get("href", context.self_href)
        links["next"] = {"href": fault.options["next_url"] or _with_host(real_href, FOREIGN_HOST)}
    elif fault.kind == "scheme_next":
        real_href = links.get("next", {}).get("href", context.self_href)
        links["next"] = {"href": urlunsplit(urlsplit(real_href)._replace(scheme="https"))}
    elif fault.kind == "partial":
        links.pop("next", None)


def apply_to_wire(fault: Fault, response: Response) -> Response:
    """Cut the encoded body short, for the faults that break the transfer itself."""
    if fault.kind == "truncated_json":
        response.body = response.body[: len(response.body) // 2]
    elif fault.kind == "reset":
        response.abort_after = len(response.body) // 2

    return response


def _duplicate_id(data: list[dict], anchor_id: str | None) -> None:
    """Give one user of the page the id of a user from the previous page, or of its neighbour.

    `anchor_id` is the last user of the previous page. On page 1 the last user takes the id of
    the first one instead.
    """
    if anchor_id is not None and data:
        target, duplicated_id = data[0], anchor_id
    elif len(data) >= 2:
        target, duplicated_id = data[-1], data[0].get("id")
    else:
        return

    old_id = target.get("id")
    target["id"] = duplicated_id
    self_link = target.get("links", {}).get("self", {})
    if old_id and "href" in self_link:
        self_link["href"] = self_link["href"].replace(old_id, str(duplicated_id))


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _validate_options(kind: str, options: dict) -> dict:
    if kind not in FAULT_OPTIONS:
        raise ValueError(f"Unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    allowed = FAULT_OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for fault {kind!r}; accepted: {accepted}"
        )

    merged = {**allowed, **options}
    if kind == "429":
        if not _is_int(merged["retry_after"]) or merged["retry_after"] < 0:
            raise ValueError(
                f"retry_after must be whole seconds >= 0, got {merged['retry_after']!r}"
            )
        if not isinstance(merged["retry_after_http_date"], bool):
            raise ValueError("retry_after_http_date must be True or False")
    if kind == "slow":
        delay = merged["delay"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
    if kind == "foreign_next" and merged["next_url"] is not None:
        if not isinstance(merged["next_url"], str):
            raise ValueError(f"next_url must be a string, got {merged['next_url']!r}")

    return merged


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
