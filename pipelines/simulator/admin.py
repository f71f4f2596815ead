"""The simulator's own HTTP API under /_simulator/, which is not part of Qlik's API.

It lets a test or a demo running in another process change the tenant. Every route requires the
tenant's API key as a Bearer token, except the avatars that `picture` links to, because a browser
loads images without it. Errors use the same body as Qlik's errors.

    GET    /_simulator/users                    all users
    POST   /_simulator/users                    {"name", "email", "status", ...} -> 201 user
    POST   /_simulator/users/{id}/activate      invited -> active
    POST   /_simulator/users/{id}/status        {"status"}
    DELETE /_simulator/users/{id}               -> 204
    POST   /_simulator/invites                  {"name", "email"} -> 201 invited user
    GET    /_simulator/faults                   pending faults
    POST   /_simulator/faults                   {"kind", "page", "times", ...options} -> 201
    DELETE /_simulator/faults                   clear faults -> 204
    GET    /_simulator/requests                 the request log
    DELETE /_simulator/requests                 clear the request log -> 204
    GET    /_simulator/avatars/{id}.svg         a user's avatar, no key needed
"""

import html
import json
import re

from .listing import render_user
from .responses import ApiError, Response, json_response
from .state import TenantState

ADMIN_ROOT = "/_simulator"

_USER_ACTION = re.compile(r"/_simulator/users/([^/]+)(?:/(activate|status))?")
_AVATAR = re.compile(r"/_simulator/avatars/([^/]+)\.svg")
_AVATAR_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
    '<rect width="64" height="64" fill="#009845"/>'
    '<text x="32" y="41" font-size="26" font-family="sans-serif" fill="#fff" '
    'text-anchor="middle">{initials}</text></svg>'
)


def handle(
    state: TenantState, method: str, path: str, body: bytes, *, authorized: bool, base_url: str
) -> Response:
    """Route one admin request, or raise ApiError with the status to send."""
    avatar_match = _AVATAR.fullmatch(path)
    if avatar_match is not None:
        _require_method(method, ("GET",), path)
        return _avatar_response(state, avatar_match.group(1))

    if not authorized:
        raise ApiError(401, "Missing or invalid API key; send it as 'Authorization: Bearer <key>'")

    if path == f"{ADMIN_ROOT}/users":
        _require_method(method, ("GET", "POST"), path)
        if method == "GET":
            users = [render_user(user, base_url) for user in state.store.snapshot()]
            return json_response(200, {"data": users})
        payload = _json_object(body)
        name = _required_string(payload, "name")
        email = payload.pop("email", None)
        status = payload.pop("status", "active")
        user = _user_call(base_url, state.store.add, name, email, status, **payload)
        return json_response(201, user)

    if path == f"{ADMIN_ROOT}/invites":
        _require_method(method, ("POST",), path)
        payload = _json_object(body)
        name = _required_string(payload, "name")
        email = _required_string(payload, "email")
        return json_response(201, _user_call(base_url, state.store.add, name, email, "invited"))

    action_match = _USER_ACTION.fullmatch(path)
    if action_match is not None:
        return _user_action(state, method, path, body, base_url, *action_match.groups())

    if path == f"{ADMIN_ROOT}/faults":
        _require_method(method, ("GET", "POST", "DELETE"), path)
        if method == "GET":
            return json_response(200, {"data": state.faults.pending()})
        if method == "DELETE":
            state.faults.clear()
            return Response(204, content_type=None)
        payload = _json_object(body)
        kind = str(_required_string(payload, "kind"))
        try:
            state.faults.inject(kind, **payload)
        except (TypeError, ValueError) as error:
            raise ApiError(400, str(error)) from None
        return json_response(201, {"kind": kind, **payload})

    if path == f"{ADMIN_ROOT}/requests":
        _require_method(method, ("GET", "DELETE"), path)
        if method == "DELETE":
            state.request_log.clear()
            return Response(204, content_type=None)
        return json_response(200, {"data": state.request_log.entries()})

    raise ApiError(404, f"No simulator resource at {path}")


def _user_action(
    state: TenantState,
    method: str,
    path: str,
    body: bytes,
    base_url: str,
    user_id: str,
    action: str | None,
) -> Response:
    if action is None:
        _require_method(method, ("DELETE",), path)
        _user_call(base_url, state.store.delete, user_id)
        return Response(204, content_type=None)

    _require_method(method, ("POST",), path)
    if action == "activate":
        return json_response(200, _user_call(base_url, state.store.activate, user_id))

    status = _required_string(_json_object(body), "status")
    return json_response(200, _user_call(base_url, state.store.set_status, user_id, status))


def _user_call(base_url: str, method, *args, **kwargs) -> dict | None:
    """Call a store method, turning its errors into 404 and 400 responses."""
    try:
        user = method(*args, **kwargs)
    except KeyError as error:
        raise ApiError(404, str(error.args[0])) from None
    except (TypeError, ValueError) as error:
        raise ApiError(400, str(error)) from None

    return None if user is None else render_user(user, base_url)


def _avatar_response(state: TenantState, user_id: str) -> Response:
    try:
        user = state.store.get(user_id)
    except KeyError as error:
        raise ApiError(404, str(error.args[0])) from None

    initials = "".join(word[0] for word in str(user.get("name", "")).split()[:2]).upper()
    svg = _AVATAR_SVG.format(initials=html.escape(initials or "?"))
    return Response(200, svg.encode("utf-8"), "image/svg+xml; charset=utf-8")


def _require_method(method: str, allowed: tuple[str, ...], path: str) -> None:
    if method not in allowed:
        raise ApiError(
            405,
            f"{method} is not supported on {path}; use {' or '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"Invalid JSON body: {error}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, f"Expected a JSON object, got {type(payload).__name__}")

    return payload


def _required_string(payload: dict, key: str) -> str:
    value = payload.pop(key, None)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Missing or invalid {key!r}: expected a non-empty string")

    return value
