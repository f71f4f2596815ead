"""HTTP responses of the simulated tenant and the Qlik error body they share."""

import json
import uuid
from dataclasses import dataclass, field

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"

# NOTE: only USERS-7 ("Not found") appears in Qlik's published users spec. The other codes are
# made up for the simulator, so a client should branch on the HTTP status, not on these codes.
ERROR_CODES = {
    400: ("USERS-1", "Invalid request parameter"),
    401: ("USERS-11", "Authorization required"),
    403: ("USERS-12", "Forbidden"),
    404: ("USERS-7", "Not found"),
    405: ("USERS-9", "Method not allowed"),
    413: ("USERS-14", "Payload too large"),
    429: ("USERS-13", "Too many requests"),
    500: ("USERS-10", "Internal server error"),
}


@dataclass
class Response:
    """One HTTP response, sent as is unless `abort_after` cuts the body short.

    `abort_after` is the number of body bytes to send before the connection is closed without
    the rest, while the Content-Length header still announces the whole body.
    """

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    abort_after: int | None = None


class ApiError(Exception):
    """A request the simulator rejects with a Qlik error body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.parameter = parameter
        self.headers = headers or {}

    def to_response(self) -> Response:
        """Build the error response, with `source.parameter` naming the rejected parameter."""
        response = error_response(self.status, self.detail, parameter=self.parameter)
        response.headers.update(self.headers)
        return response


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    """Build a UTF-8 JSON response that sends non-ASCII text as is, not as \\u escapes."""
    encoded = json.dumps(body, ensure_ascii=False).encode("utf-8")
    return Response(status, encoded, JSON_TYPE, dict(headers or {}))


def error_body(status: int, detail: str, *, parameter: str | None = None) -> dict:
    """Build Qlik's `{"errors": [...], "traceId": ...}` body for one error.

    401 and 403 carry `status` as a string ("401"), as some Qlik services send it, and all other
    statuses carry it as a number, as the users spec declares it.
    """
    code, title = ERROR_CODES.get(status, (f"USERS-{status}", "Error"))
    error: dict = {"code": code, "title": title, "detail": detail}
    error["status"] = str(status) if status in (401, 403) else status
    if parameter is not None:
        error["source"] = {"parameter": parameter}

    return {"errors": [error], "traceId": uuid.uuid4().hex}


def error_response(status: int, detail: str, *, parameter: str | None = None) -> Response:
    """Build a JSON error response with Qlik's error body."""
    return json_response(status, error_body(status, detail, parameter=parameter))


def html_response(status: int, html: str) -> Response:
    """Build a text/html response, as a proxy in front of a tenant sends."""
    return Response(status, html.encode("utf-8"), HTML_TYPE)
