"""`GET /api/v1/users`: query parameters, keyset pagination and the response body.

A response looks like this, with `prev` only after the first page, `next` only when more users
follow and `totalResults` only when the request sets `totalResults=true`:

    {"data": [{"id": "...", "name": "...", ..., "links": {"self": {"href": "..."}}}],
     "links": {"self": {"href": "..."}, "prev": {"href": "..."}, "next": {"href": "..."}},
     "totalResults": 250}

Page links are absolute URLs that repeat the query of the request (limit, fields, filter, sort,
totalResults) and add a `next` or `prev` cursor.
"""

import dataclasses
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from .cursor import Cursor, decode_cursor, encode_cursor
from .responses import ApiError
from .scim_filter import FilterError, Node, matches, parse_filter

USERS_PATH = "/api/v1/users"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
DEFAULT_SORT = "+name"

# Sort fields of the users spec, mapped to the user field they order by.
SORT_FIELDS = {
    "name": "name",
    "_id": "id",
    "id": "id",
    "tenantId": "tenantId",
    "clientId": "clientId",
    "status": "status",
    "subject": "subject",
    "email": "email",
    "inviteExpiry": "inviteExpiry",
    "createdAt": "createdAt",
}
CARRIED_PARAMETERS = ("fields", "filter", "sort", "totalResults")


@dataclass(frozen=True)
class ListingQuery:
    """The validated query parameters of one listing request."""

    limit: int
    sort: str
    sort_field: str
    descending: bool
    fields: tuple[str, ...] | None
    filter: Node | None
    total_results: bool
    cursor: Cursor | None
    carried_params: tuple[tuple[str, str], ...]

    @property
    def page_number(self) -> int:
        """Number of the requested page: 1 without a cursor, else the page the cursor names."""
        return self.cursor.page if self.cursor else 1


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursors around it."""

    users: list[dict]
    number: int
    total: int
    next_cursor: Cursor | None
    prev_cursor: Cursor | None
    resume_cursor: Cursor


def parse_listing_query(params: dict[str, str]) -> ListingQuery:
    """Validate the query parameters, or raise a 400 ApiError naming the invalid one."""
    limit = _parse_limit(params.get("limit"))
    sort, sort_field, descending = _parse_sort(params.get("sort"))

    fields = None
    if params.get("fields"):
        fields = tuple(name.strip() for name in params["fields"].split(",") if name.strip())

    node = None
    if params.get("filter", "").strip():
        try:
            node = parse_filter(params["filter"])
        except FilterError as error:
            raise ApiError(400, f"Invalid filter: {error}", parameter="filter") from None

    total_results = _parse_boolean(params.get("totalResults"), "totalResults")

    if "next" in params and "prev" in params:
        raise ApiError(400, "'next' cannot be used together with 'prev'", parameter="prev")
    cursor = None
    for direction in ("next", "prev"):
        if direction in params:
            cursor = decode_cursor(params[direction], parameter=direction, sort=sort)

    carried = [("limit", str(limit))]
    carried += [(name, params[name]) for name in CARRIED_PARAMETERS if name in params]

    return ListingQuery(
        limit=limit,
        sort=sort,
        sort_field=sort_field,
        descending=descending,
        fields=fields,
        filter=node,
        total_results=total_results,
        cursor=cursor,
        carried_params=tuple(carried),
    )


def select_page(users: list[dict], query: ListingQuery) -> Page:
    """Filter and sort the users, then cut out the page the query's cursor points at."""
    if query.filter is not None:
        users = [user for user in users if matches(query.filter, user)]
    ordered = sorted(users, key=lambda user: _user_key(user, query), reverse=query.descending)
    keys = [_user_key(user, query) for user in ordered]

    cursor = query.cursor
    if cursor is None or cursor.anchor_id is None:
        start = 0
        end = min(query.limit, len(ordered))
    else:
        anchor = _sort_key(cursor.anchor_value, cursor.anchor_id)
        before = sum(1 for key in keys if _comes_before(key, anchor, query.descending))
        at_or_before = before + (1 if anchor in keys else 0)
        if cursor.backward:
            end = at_or_before if cursor.inclusive else before
            start = max(0, end - query.limit)
        else:
            start = before if cursor.inclusive else at_or_before
            end = min(start + query.limit, len(ordered))
    page_users = ordered[start:end]

    number = query.page_number
    next_cursor = None
    if end < len(ordered) and page_users:
        next_cursor = _anchor_cursor(query, page_users[-1], number + 1, backward=False)
    elif end < len(ordered) and cursor is not None:
        # An empty page before the first user: the next page starts with the anchor itself.
        next_cursor = dataclasses.replace(
            cursor, page=number + 1, backward=False, inclusive=not cursor.inclusive
        )

    prev_cursor = None
    if page_users and start > 0:
        prev_cursor = _anchor_cursor(query, page_users[0], max(1, number - 1), backward=True)
    elif start > 0 and cursor is not None:
        # An empty page after the last user: the previous page ends with the anchor itself.
        prev_cursor = dataclasses.replace(
            cursor, page=max(1, number - 1), backward=True, inclusive=not cursor.inclusive
        )

    if page_users:
        resume_cursor = _anchor_cursor(query, page_users[0], number + 1, backward=False)
        resume_cursor = dataclasses.replace(resume_cursor, inclusive=True)
    elif cursor is not None and not cursor.backward:
        resume_cursor = dataclasses.replace(cursor, page=number + 1)
    else:
        resume_cursor = Cursor(sort=query.sort, page=number + 1)

    return Page(page_users, number, len(ordered), next_cursor, prev_cursor, resume_cursor)


def listing_href(base_url: str, query: ListingQuery, cursor: Cursor | None) -> str:
    """Build the absolute URL of a page: the request's query plus the cursor, if any."""
    params = list(query.carried_params)
    if cursor is not None:
        params.append(("prev" if cursor.backward else "next", encode_cursor(cursor)))

    return f"{base_url}{USERS_PATH}?{urlencode(params, quote_via=quote)}"


def render_page(page: Page, query: ListingQuery, base_url: str, self_href: str) -> dict:
    """Build the response body of a page."""
    links = {"self": {"href": self_href}}
    if page.prev_cursor is not None:
        links["prev"] = {"href": listing_href(base_url, query, page.prev_cursor)}
    if page.next_cursor is not None:
        links["next"] = {"href": listing_href(base_url, query, page.next_cursor)}

    body: dict = {
        "data": [render_user(user, base_url, query.fields) for user in page.users],
        "links": links,
    }
    if query.total_results:
        body["totalResults"] = page.total

    return body


def render_user(user: dict, base_url: str, fields: tuple[str, ...] | None = None) -> dict:
    """Add the URL-dependent fields to a stored user, then keep only `fields` when given.

    `picture` points at an avatar the simulator serves itself, so nothing leaves the machine.
    Unknown names in `fields` are ignored.
    """
    rendered = dict(user)
    rendered["picture"] = f"{base_url}/_simulator/avatars/{user['id']}.svg"
    rendered["links"] = {"self": {"href": f"{base_url}{USERS_PATH}/{user['id']}"}}
    if fields is None:
        return rendered

    return {name: rendered[name] for name in fields if name in rendered}


def _parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise ApiError(400, f"Invalid limit {text!r}: expected an integer", parameter="limit")

    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"Invalid limit {limit}: expected 1 to {MAX_LIMIT}", parameter="limit")

    return limit


def _parse_sort(text: str | None) -> tuple[str, str, bool]:
    text = DEFAULT_SORT if text is None else text
    # An unencoded "+" in a query string decodes to a space, so " name" means "+name".
    direction = "-" if text.startswith("-") else "+"
    name = text[1:] if text[:1] in "+- " and text else text
    if name not in SORT_FIELDS:
        raise ApiError(
            400,
            f"Invalid sort {text!r}: expected one of {', '.join(SORT_FIELDS)}, "
            "optionally prefixed with + or -",
            parameter="sort",
        )

    return f"{direction}{name}", SORT_FIELDS[name], direction == "-"


def _parse_boolean(text: str | None, parameter: str) -> bool:
    if text is None or text.lower() == "false":
        return False
    if text.lower() == "true":
        return True

    raise ApiError(
        400, f"Invalid {parameter} {text!r}: expected true or false", parameter=parameter
    )


def _anchor_cursor(query: ListingQuery, user: dict, page: int, *, backward: bool) -> Cursor:
    return Cursor(
        sort=query.sort,
        page=page,
        anchor_value=user.get(query.sort_field),
        anchor_id=user["id"],
        backward=backward,
    )


def _user_key(user: dict, query: ListingQuery) -> tuple:
    return _sort_key(user.get(query.sort_field), user["id"])


def _sort_key(value: object, user_id: str) -> tuple:
    """Order users by value, missing values first, with the id breaking ties.

    Text compares case-insensitively first, so "anna" and "Anna" sort together.
    """
    if value is None:
        return (0, 0.0, "", "", user_id)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "", "", user_id)

    text = str(value)
    return (2, 0.0, text.casefold(), text, user_id)


def _comes_before(key: tuple, anchor: tuple, descending: bool) -> bool:
    return key > anchor if descending else key < anchor
