"""Opaque keyset cursors for the users listing.

A cursor is URL-safe base64 (without padding) of a small JSON object. The object contains the
sort the cursor belongs to, the sort value and id of an anchor user, and the number of the page
the cursor leads to. The anchor is the last user of the previous page for a `next` cursor and the
first user of the following page for a `prev` cursor. Clients must treat cursors as opaque, as
they must with Qlik's own cursors.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from .responses import ApiError


@dataclass(frozen=True)
class Cursor:
    """A position in one sorted listing and the number of the page that starts there.

    With `anchor_id` None the position is the start of the listing. A forward cursor selects the
    users after the anchor and a backward (`prev`) cursor the users before it. With `inclusive`
    the anchor user itself is selected too.
    """

    sort: str
    page: int
    anchor_value: Any = None
    anchor_id: str | None = None
    backward: bool = False
    inclusive: bool = False


def encode_cursor(cursor: Cursor) -> str:
    """Encode a cursor as an opaque URL-safe string."""
    fields = {
        "s": cursor.sort,
        "p": cursor.page,
        "v": cursor.anchor_value,
        "id": cursor.anchor_id,
        "b": cursor.backward,
        "i": cursor.inclusive,
    }
    raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str, *, parameter: str, sort: str) -> Cursor:
    """Decode a cursor from the `next` or `prev` parameter, or raise a 400 ApiError.

    The cursor must belong to the listing's `sort`, because its anchor is a value of that field.
    """
    try:
        padded = text + "=" * (-len(text) % 4)
        fields = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        cursor = Cursor(
            sort=fields["s"],
            page=fields["p"],
            anchor_value=fields["v"],
            anchor_id=fields["id"],
            backward=fields["b"],
            inclusive=fields["i"],
        )
    except (ValueError, UnicodeError, binascii.Error, TypeError, KeyError):
        raise ApiError(
            400,
            f"Invalid cursor in '{parameter}'; follow the links returned by the API "
            "instead of building cursors",
            parameter=parameter,
        ) from None

    valid_types = (
        isinstance(cursor.sort, str)
        and isinstance(cursor.page, int)
        and cursor.page >= 1
        and (cursor.anchor_id is None or isinstance(cursor.anchor_id, str))
        and isinstance(cursor.backward, bool)
        and isinstance(cursor.inclusive, bool)
    )
    if not valid_types:
        raise ApiError(400, f"Invalid cursor in '{parameter}'", parameter=parameter)
    if cursor.backward != (parameter == "prev"):
        raise ApiError(
            400, f"The cursor in '{parameter}' belongs to the other direction", parameter=parameter
        )
    if cursor.sort != sort:
        raise ApiError(
            400,
            f"The cursor in '{parameter}' belongs to sort {cursor.sort!r}, not {sort!r}; "
            "keep the query of the page that returned it",
            parameter=parameter,
        )

    return cursor
