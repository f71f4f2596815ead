"""HTTP side of the simulated tenant: Qlik's users API paths and the simulator's own paths."""

import ipaddress
import logging
import re
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from . import admin, faults
from .listing import (
    USERS_PATH,
    listing_href,
    parse_listing_query,
    render_page,
    render_user,
    select_page,
)
from .ratelimit import retry_after_header
from .responses import ApiError, Response, error_response, json_response
from .state import TenantState

logger = logging.getLogger(__name__)

USER_PATH = re.compile(r"/api/v1/users/([^/]+)")
MAX_BODY_BYTES = 1_000_000


def validate_loopback_host(host: str) -> str:
    """Return `host` as an IPv4 loopback address, or raise ValueError for any other host.

    "localhost" becomes "127.0.0.1". The simulator never listens beyond the local machine.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(
            f"Invalid host {host!r}: the simulator binds only to IPv4 loopback addresses "
            "(127.0.0.0/8 or localhost)"
        )

    return host


class SimulatorServer(ThreadingHTTPServer):
    """Threaded HTTP server that serves one TenantState and can drop its open connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: TenantState) -> None:
        self.state = state
        self._connections_lock = threading.Lock()
        self._open_connections: set[socket.socket] = set()
        super().__init__(address, TenantRequestHandler)

    @property
    def base_url(self) -> str:
        """Scheme, host and port of the server, used to build every absolute link."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def finish_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._open_connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._open_connections.discard(request)

    def close_open_connections(self) -> None:
        """Shut down kept-alive connections, so their handler threads end with the server."""
        with self._connections_lock:
            connections = list(self._open_connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.debug("Connection from %s ended early: %s", client_address, error)
        else:
            logger.exception("Unexpected error while serving %s", client_address)


class TenantRequestHandler(BaseHTTPRequestHandler):
    """Request handler of one connection. Requests under /_simulator/ go to the admin API."""

    protocol_version = "HTTP/1.1"
    server_version = "SimulatedQlikTenant/1.0"
    sys_version = ""
    # Seconds an idle kept-alive connection stays open.
    timeout = 30
    server: SimulatorServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes. Without TCP_NODELAY, Nagle's algorithm
        # delays the body until the client's delayed ACK, which measured about 40 ms per
        # response on Linux loopback.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler sends 501 for a method without a do_<METHOD> attribute.
        # Routing every method through _handle gives unsupported ones a 405 with Qlik's body.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        authorized = state.is_authorized(self.headers.get("Authorization"))
        is_admin = url.path == admin.ADMIN_ROOT or url.path.startswith(admin.ADMIN_ROOT + "/")
        self._page_number: int | None = None
        self._fault_kind: str | None = None
        rate_limited = False

        try:
            body = self._read_body()
            if not is_admin and authorized and state.rate_limit is not None:
                wait = state.rate_limit.take()
                if wait is not None:
                    rate_limited = True
                    raise ApiError(
                        429,
                        f"Rate limit exceeded for the users API; retry after {wait:.1f} seconds",
                        headers={"Retry-After": retry_after_header(wait)},
                    )
            if is_admin:
                response = admin.handle(
                    state,
                    self.command,
                    url.path,
                    body,
                    authorized=authorized,
                    base_url=self.server.base_url,
                )
            else:
                if state.latency > 0:
                    time.sleep(state.latency)
                response = self._api_response(url.path, params, url.query, authorized)
        except ApiError as error:
            response = error.to_response()
        except Exception:
            logger.exception("Failed to serve %s %s", self.command, url.path)
            response = error_response(500, "The simulator failed to serve the request")

        # Recorded before sending, so a client that got the response always finds it logged.
        if not is_admin:
            state.request_log.append(
                {
                    "method": self.command,
                    "path": url.path,
                    "query": params,
                    "status": response.status,
                    "authorized": authorized,
                    "page": self._page_number,
                    "fault": self._fault_kind,
                    "rate_limited": rate_limited,
                }
            )
        self._send(response)

    def _api_response(self, path: str, params: dict, raw_query: str, authorized: bool) -> Response:
        user_match = USER_PATH.fullmatch(path)
        if path != USERS_PATH and user_match is None:
            raise ApiError(404, f"No resource at {path}; the simulator serves {USERS_PATH}")
        if self.command != "GET":
            raise ApiError(
                405, f"{self.command} is not supported on {path}; use GET", headers={"Allow": "GET"}
            )
        if not authorized:
            raise ApiError(
                401, "Missing or invalid API key; send it as 'Authorization: Bearer <key>'"
            )

        if user_match is not None:
            try:
                user = self.server.state.store.get(user_match.group(1))
            except KeyError as error:
                raise ApiError(404, str(error.args[0])) from None
            return json_response(200, render_user(user, self.server.base_url))

        return self._listing_response(params, raw_query)

    def _listing_response(self, params: dict, raw_query: str) -> Response:
        state = self.server.state
        base_url = self.server.base_url
        query = parse_listing_query(params)
        self._page_number = query.page_number

        fault = state.faults.take(query.page_number)
        if fault is not None:
            self._fault_kind = fault.kind
            logger.info("Injecting fault %r into page %d", fault.kind, query.page_number)
            if fault.kind == "slow":
                time.sleep(fault.options["delay"])
            replacement = faults.response_before_listing(fault)
            if replacement is not None:
                return replacement

        page = select_page(state.store.snapshot(), query)
        self_href = f"{base_url}{USERS_PATH}" + (f"?{raw_query}" if raw_query else "")
        body = render_page(page, query, base_url, self_href)
        next_link = body["links"].get("next")
        if next_link is not None:
            state.link_origins.record(next_link["href"], self_href)

        if fault is not None:
            previous_href = None
            if query.cursor is not None:
                previous_href = state.link_origins.origin_of(self_href)
            context = faults.FaultContext(
                self_href=self_href,
                resume_href=listing_href(base_url, query, page.resume_cursor),
                previous_href=previous_href,
                anchor_id=query.cursor.anchor_id if query.cursor else None,
            )
            faults.apply_to_body(fault, body, context)

        response = json_response(200, body)
        if fault is not None:
            response = faults.apply_to_wire(fault, response)

        return response

    def _read_body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise ApiError(400, "Chunked request bodies are not supported; send Content-Length")

        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        if not length_header.strip().isdigit():
            self.close_connection = True
            raise ApiError(400, f"Invalid Content-Length {length_header!r}")

        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, f"Request body of {length} bytes exceeds {MAX_BODY_BYTES} bytes")

        return self.rfile.read(length)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection and response.abort_after is None:
            self.send_header("Connection", "close")
        self.end_headers()

        if self.command == "HEAD":
            return
        if response.abort_after is None:
            self.wfile.write(response.body)
            return

        self.wfile.write(response.body[: response.abort_after])
        self._reset_connection()

    def _reset_connection(self) -> None:
        """Close the connection with a TCP reset, without sending the rest of the body."""
        self.close_connection = True
        # A linger time of 0 makes close() send RST instead of FIN. The socket is really closed
        # when the handler closes its file objects, and the server's shutdown() then fails
        # quietly on the closed socket.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
