"""Qlik-like user records, generated from a seeded random number generator.

The same seed and the same sequence of calls give the same users, so tests can rely on them.
Records have the fields of the `User` schema in Qlik's users API except `links` and `picture`,
which depend on the simulator's URL and are added when a user is rendered.
"""

import random
import unicodedata
from datetime import UTC, datetime, timedelta

USER_STATUSES = ("active", "invited", "disabled", "deleted", "provisioned")

INVITE_LIFETIME = timedelta(days=7)

# Seeded users are created between these two instants, so their timestamps never depend on
# the clock of the machine running the tests.
SEED_PERIOD_START = datetime(2022, 1, 1, tzinfo=UTC)
SEED_PERIOD_END = datetime(2025, 12, 1, tzinfo=UTC)

# Share of each status among seeded users that are not invited.
OTHER_STATUS_WEIGHTS = {"active": 85, "disabled": 7, "provisioned": 5, "deleted": 3}

FIRST_NAMES = (
    "Anna",
    "Björn",
    "Chloé",
    "David",
    "Élodie",
    "François",
    "Grace",
    "Håkon",
    "Ingrid",
    "Jürgen",
    "Kenji",
    "Łukasz",
    "María",
    "Noah",
    "Olga",
    "Priya",
    "Quentin",
    "Renée",
    "Søren",
    "Tomás",
    "Uma",
    "Viktor",
    "Wei",
    "Xavier",
    "Yasmin",
    "Zoë",
    "Ömer",
    "Aleksandra",
    "Ben",
    "Camille",
    "Dagný",
    "Emeka",
    "Fatima",
    "Gökhan",
    "Hannah",
    "Isaac",
    "Joanna",
    "Liam",
)
LAST_NAMES = (
    "Andersson",
    "Bauer",
    "Çelik",
    "Dubois",
    "Eriksen",
    "Fernández",
    "García",
    "Hoffmann",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "López",
    "Müller",
    "Novak",
    "O'Brien",
    "Pérez",
    "Quinn",
    "Rossi",
    "Schröder",
    "Tanaka",
    "Ueda",
    "Varga",
    "Wójcik",
    "Xu",
    "Yılmaz",
    "Zimmermann",
    "Nguyễn",
    "Smith",
    "Brown",
    "Okafor",
    "Haddad",
    "Lindqvist",
    "Dvořák",
    "Nakamura",
)
# Names without a Latin transliteration, so their e-mail local part falls back to the user id.
NON_LATIN_NAMES = ("山田 太郎", "Ελένη Παπαδοπούλου", "Дмитрий Иванов", "김민준", "محمد علي")
LOCALES = ("en", "en", "en", "de", "fr", "sv", "es", "ja", "pl", "nl")

# Roles modelled on Qlik Cloud's default roles, plus one custom role.
ROLE_DEFINITIONS = (
    ("TenantAdmin", "default", "admin"),
    ("AnalyticsAdmin", "default", "admin"),
    ("DataAdmin", "default", "admin"),
    ("AuditAdmin", "default", "admin"),
    ("SharedSpaceCreator", "default", "user"),
    ("ManagedSpaceCreator", "default", "user"),
    ("DataSpaceCreator", "default", "user"),
    ("Steward", "default", "user"),
    ("Finance Analyst", "custom", "user"),
)

EMAIL_DOMAIN = "corp.example"
TRANSLITERATIONS = str.maketrans(
    {"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "đ": "d", "ı": "i", "ð": "d", "þ": "th"}
)


def format_timestamp(moment: datetime) -> str:
    """Format a UTC instant as Qlik does: ISO 8601 with milliseconds and a Z suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class UserFactory:
    """Builder of user records. It is not thread-safe, so the store calls it under its lock."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.tenant_id = self._random_token(32)
        self.roles = [
            {"id": self._random_hex(24), "name": name, "type": kind, "level": level}
            for name, kind, level in ROLE_DEFINITIONS
        ]
        self._email_local_parts: set[str] = set()
        # Next numeric suffix to try for each local part, so that the 1,000th "anna.smith"
        # does not test the 999 taken suffixes first. Every suffix below it is taken.
        self._next_email_suffix: dict[str, int] = {}

    def generate(self, status: str) -> dict:
        """Build a seeded user with a made-up name, e-mail address and timestamps."""
        created = self._random_instant(SEED_PERIOD_START, SEED_PERIOD_END)
        if self.random.random() < 0.04:
            name = self.random.choice(NON_LATIN_NAMES)
        else:
            name = f"{self.random.choice(FIRST_NAMES)} {self.random.choice(LAST_NAMES)}"

        # The e-mail address may need the id, so it replaces a placeholder that keeps its place.
        user = self.build(name, "", status, created)
        user["email"] = self._unique_email(name, user["id"])

        if status != "invited":
            updated = self._random_instant(created, SEED_PERIOD_END)
            user["lastUpdatedAt"] = format_timestamp(updated)

        return user

    def build(self, name: str, email: str | None, status: str, created: datetime) -> dict:
        """Build a user created at `created`, with an invite expiry when it is invited."""
        user_id = self.new_id(created)
        user = {
            "id": user_id,
            "tenantId": self.tenant_id,
            "status": status,
            "subject": f"auth0|{self._random_hex(40)}",
            "name": name,
            "email": email,
            "locale": self.random.choice(LOCALES),
            "createdAt": format_timestamp(created),
            "lastUpdatedAt": format_timestamp(created),
            "assignedRoles": self._random_roles(),
            "assignedGroups": [],
        }
        if email is None:
            del user["email"]
        if status == "invited":
            user["inviteExpiry"] = int((created + INVITE_LIFETIME).timestamp())

        return user

    def new_id(self, created: datetime) -> str:
        """Return a 24-hex-digit id shaped like a MongoDB ObjectId: creation time, then random."""
        return f"{int(created.timestamp()) & 0xFFFFFFFF:08x}{self._random_hex(16)}"

    def _random_roles(self) -> list[dict]:
        draw = self.random.random()
        if draw < 0.05:
            roles = [self.roles[0]]
        elif draw < 0.15:
            roles = self.random.sample(self.roles[1:4], 1)
        else:
            roles = self.random.sample(self.roles[4:], self.random.randint(0, 2))

        return [dict(role) for role in roles]

    def _unique_email(self, name: str, user_id: str) -> str:
        ascii_name = unicodedata.normalize("NFKD", name.lower().translate(TRANSLITERATIONS))
        ascii_name = ascii_name.encode("ascii", "ignore").decode("ascii")
        words = ["".join(ch for ch in word if ch.isalnum()) for word in ascii_name.split()]
        local_part = ".".join(word for word in words if word) or f"user.{user_id[-6:]}"

        candidate = local_part
        suffix = self._next_email_suffix.get(local_part, 2)
        while candidate in self._email_local_parts:
            candidate = f"{local_part}{suffix}"
            suffix += 1
        self._email_local_parts.add(candidate)
        if candidate != local_part:
            self._next_email_suffix[local_part] = suffix

        return f"{candidate}@{EMAIL_DOMAIN}"

    def _random_instant(self, start: datetime, end: datetime) -> datetime:
        span_ms = int((end - start).total_seconds() * 1000)
        return start + timedelta(milliseconds=self.random.randint(0, max(span_ms, 0)))

    def _random_hex(self, length: int) -> str:
        return f"{self.random.getrandbits(length * 4):0{length}x}"

    def _random_token(self, length: int) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        return "".join(self.random.choice(alphabet) for _ in range(length))
