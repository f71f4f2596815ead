"""The users of the simulated tenant, shared by the test thread and the server threads."""

import copy
import itertools
import threading
from datetime import UTC, datetime

from .users import (
    INVITE_LIFETIME,
    OTHER_STATUS_WEIGHTS,
    USER_STATUSES,
    UserFactory,
    format_timestamp,
)

# Fields the simulator computes from its own URL when it renders a user.
RENDERED_FIELDS = ("links", "picture")


class UserStore:
    """Thread-safe collection of user records by id. Every method returns copies."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, dict] = {}
        self._factory = UserFactory(seed)

    def seed(self, count: int, *, invited_share: float = 0.1) -> list[dict]:
        """Add `count` generated users, `round(count * invited_share)` of them invited.

        The others are mostly active, with a few disabled, provisioned and deleted users.
        """
        with self._lock:
            return [copy.deepcopy(user) for user in self._generate(count, invited_share)]

    def seed_bulk(self, count: int, *, invited_share: float = 0.1) -> int:
        """Add the same users as `seed` would, without returning copies; return the count.

        For large tenants: copying every new user takes about as long as generating it.
        """
        with self._lock:
            return len(self._generate(count, invited_share))

    def _generate(self, count: int, invited_share: float) -> list[dict]:
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")
        if not 0.0 <= invited_share <= 1.0:
            raise ValueError(f"invited_share must be between 0 and 1, got {invited_share}")

        invited_positions = set(
            self._factory.random.sample(range(count), round(count * invited_share))
        )
        statuses = list(OTHER_STATUS_WEIGHTS)
        # Cumulative weights give the same draws as `weights` without summing them per user.
        cumulative_weights = list(itertools.accumulate(OTHER_STATUS_WEIGHTS.values()))

        added = []
        for position in range(count):
            if position in invited_positions:
                status = "invited"
            else:
                status = self._factory.random.choices(statuses, cum_weights=cumulative_weights)[0]
            user = self._factory.generate(status)
            self._insert(user)
            added.append(user)

        return added

    def add(self, name: str, email: str | None, status: str = "active", **fields) -> dict:
        """Add a user created now; `fields` set or replace any other user field, `id` included."""
        _check_status(status)
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        if email is not None and not isinstance(email, str):
            raise TypeError(f"email must be a string or None, got {type(email).__name__}")
        for rendered in RENDERED_FIELDS:
            if rendered in fields:
                raise ValueError(f"{rendered!r} is computed from the simulator's URL; omit it")

        with self._lock:
            user = self._factory.build(name, email, status, datetime.now(UTC))
            user.update(copy.deepcopy(fields))
            if not isinstance(user["id"], str) or not user["id"]:
                raise ValueError(f"id must be a non-empty string, got {user['id']!r}")
            if user["id"] in self._users:
                raise ValueError(f"A user with id {user['id']!r} already exists")
            self._insert(user)

            return copy.deepcopy(user)

    def activate(self, user_id: str) -> dict:
        """Turn an invited user into an active one, as accepting the invite does."""
        with self._lock:
            user = self._find(user_id)
            if user["status"] != "invited":
                raise ValueError(
                    f"User {user_id!r} is {user['status']}, not invited; "
                    "use set_status to change it"
                )

            return self._change_status(user, "active")

    def set_status(self, user_id: str, status: str) -> dict:
        """Set a user's status. An invited user gets an invite expiry 7 days from now."""
        _check_status(status)
        with self._lock:
            return self._change_status(self._find(user_id), status)

    def delete(self, user_id: str) -> None:
        """Remove a user, so listings no longer return it."""
        with self._lock:
            self._find(user_id)
            del self._users[user_id]

    def get(self, user_id: str) -> dict:
        """Return a copy of one user, or raise KeyError."""
        with self._lock:
            return copy.deepcopy(self._find(user_id))

    def snapshot(self) -> list[dict]:
        """Return copies of all users, in the order they were added."""
        with self._lock:
            return copy.deepcopy(list(self._users.values()))

    def _insert(self, user: dict) -> None:
        # A clash of the 64 random bits in an id is unlikely but would silently replace a user.
        while user["id"] in self._users:
            user["id"] = self._factory.new_id(datetime.now(UTC))
        self._users[user["id"]] = user

    def _find(self, user_id: str) -> dict:
        try:
            return self._users[user_id]
        except KeyError:
            raise KeyError(f"No user with id {user_id!r} in the simulated tenant") from None

    def _change_status(self, user: dict, status: str) -> dict:
        now = datetime.now(UTC)
        user["status"] = status
        user["lastUpdatedAt"] = format_timestamp(now)
        if status == "invited":
            user["inviteExpiry"] = int((now + INVITE_LIFETIME).timestamp())
        else:
            user.pop("inviteExpiry", None)

        return copy.deepcopy(user)


def _check_status(status: str) -> None:
    if status not in USER_STATUSES:
        raise ValueError(f"Invalid status {status!r}; expected one of {', '.join(USER_STATUSES)}")
