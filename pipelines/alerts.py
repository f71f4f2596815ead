"""Build the alert about a run's new and activated users, and deliver it through apprise.

Delivery is at least once per channel and never twice: each alert waits as a JSON file under
`<tenant>/alerts/pending/` with one record per channel, and moves to `alerts/sent/` when every
channel has it. A channel that fails is retried on a later call with exponential backoff.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipelines.snapshots import make_private_dirs, write_atomically

logger = logging.getLogger(__name__)

OUTBOX_CHANNEL = "outbox"
MAX_TITLE_LENGTH = 120
MAX_NAME_LENGTH = 200
DEFAULT_MAX_LISTED = 50

# Control characters, line and paragraph separators, and the bidirectional overrides that can
# make a name display reversed.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]+")


class AlertConfigError(Exception):
    """QLIK_ALERT_URLS contains a URL that apprise does not understand."""


@dataclass(frozen=True)
class Alert:
    title: str
    body: str


def clean_text(value: str | None, max_length: int = MAX_NAME_LENGTH) -> str:
    """Make a name or email from the tenant safe for a one-line, plain-text field.

    Control characters, CR and LF become spaces so they cannot add mail headers or lines, and
    text longer than `max_length` is cut with an ellipsis. HTML stays literal text because alerts
    are always sent as plain text.
    """
    if value is None:
        return ""
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", str(value))).strip()
    if len(text) > max_length:
        text = text[: max_length - 1].rstrip() + "…"
    return text


def _count(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


def build_alert(
    tenant: str,
    new_users: pa.Table,
    activated_users: pa.Table,
    *,
    changes_dir: Path | None = None,
    max_listed: int = DEFAULT_MAX_LISTED,
) -> Alert:
    """Build the title and plain-text body of the alert for one comparison."""
    title = alert_title(tenant, new_users.num_rows, activated_users.num_rows)

    sections = [f"Qlik Cloud tenant: {tenant}"]
    if new_users.num_rows:
        sections.append(
            _user_section(f"New users ({new_users.num_rows})", new_users, max_listed, True)
        )
    if activated_users.num_rows:
        sections.append(
            _user_section(
                f"Activated users, invite accepted ({activated_users.num_rows})",
                activated_users,
                max_listed,
                False,
            )
        )
    if changes_dir is not None:
        sections.append(f"Full lists: {changes_dir}")

    return Alert(title=title, body="\n\n".join(sections) + "\n")


def alert_title(tenant: str, new_count: int, activated_count: int) -> str:
    parts = []
    if new_count:
        parts.append(_count(new_count, "new user"))
    if activated_count:
        parts.append(_count(activated_count, "activated user"))
    return clean_text(f"{' and '.join(parts)} in {tenant}", MAX_TITLE_LENGTH)


def build_counts_alert(
    tenant: str, new_count: int, activated_count: int, run_id: str, reason: str
) -> Alert:
    """Build an alert from the counts alone, when the lists of users can no longer be read."""
    body = (
        f"Qlik Cloud tenant: {tenant}\n\n"
        f"New users: {new_count}\nActivated users, invite accepted: {activated_count}\n\n"
        f"The lists of these users could not be read ({reason}). The new_users and "
        f"activated_users materializations of Dagster run {run_id} show previews of them.\n"
    )
    return Alert(title=alert_title(tenant, new_count, activated_count), body=body)


def _user_section(heading: str, users: pa.Table, max_listed: int, show_status: bool) -> str:
    lines = [heading + ":"]
    shown = users.slice(0, max_listed).select(["name", "email", "status"]).to_pylist()
    for user in shown:
        name = clean_text(user["name"]) or "(no name)"
        email = clean_text(user["email"])
        line = f"- {name} <{email}>" if email else f"- {name} (no email)"
        if show_status and user["status"] and user["status"] != "active":
            line += f" [{clean_text(user['status'], 20)}]"
        lines.append(line)
    if users.num_rows > len(shown):
        lines.append(f"- ... and {users.num_rows - len(shown)} more")
    return "\n".join(lines)


@dataclass(frozen=True)
class AlertChannel:
    """One apprise URL. `label` and `id` are safe to log: neither contains the URL's secrets."""

    url: str
    id: str
    label: str

    @classmethod
    def from_url(cls, url: str) -> AlertChannel:
        import apprise

        scheme = url.split("://", 1)[0] if "://" in url else url[:10]
        authority = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
        if authority.count("@") > 1:
            raise AlertConfigError(
                f"QLIK_ALERT_URLS has a {scheme}:// entry with more than one '@' before the "
                "host; percent-encode '@' inside a user name or password as %40"
            )

        with (
            _redacted_logs(url),
            apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured,
        ):
            plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            reason = redact(" ".join(captured.getvalue().split()), url)[:300]
            raise AlertConfigError(
                f"QLIK_ALERT_URLS has a {scheme}:// entry that apprise cannot use"
                f"{f' ({reason})' if reason else ''}; check it against the apprise URL formats "
                "(mailto://, slack://, msteams://, json://, ...)"
            )
        # apprise normalizes the URL (case, defaults, trailing slash), so one destination
        # written two ways is one channel.
        return cls(url=url, id=_channel_id(plugin.url()), label=_channel_label(plugin))


def parse_alert_channels(text: str | None) -> list[AlertChannel]:
    """Split QLIK_ALERT_URLS on whitespace and commas (commas inside a URL's query stay)."""
    if text is None or not text.strip():
        return []
    channels = {}
    # apprise loads its plugins on import: imported here, runs that send no alert skip it.
    from apprise.utils.parse import parse_urls

    for url in parse_urls(text):
        channel = AlertChannel.from_url(url)
        channels[channel.id] = channel
    return list(channels.values())


def _channel_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _channel_label(plugin) -> str:
    """Return the scheme and host of the URL as apprise masks it, without user, path or query."""
    private = plugin.url(privacy=True)
    scheme, _, rest = private.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{netloc.rsplit('@', 1)[-1]}"


def redact(text: str, url: str) -> str:
    """Remove from `text` every part of `url` that may be a secret: credentials, path, query."""
    parsed = urllib.parse.urlsplit(url)
    secrets = {parsed.username, parsed.password, parsed.path, parsed.query}
    secrets.update(parsed.path.split("/"))
    for _, value in urllib.parse.parse_qsl(parsed.query):
        secrets.add(value)
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "****")
        text = text.replace(urllib.parse.unquote(secret), "****")
    return text


@dataclass
class DeliveryResult:
    run_id: str
    channel: str
    delivered: bool
    detail: str


class AlertQueue:
    """The alerts of one tenant that are waiting for delivery, and the ones delivered."""

    def __init__(
        self,
        alerts_dir: Path,
        *,
        backoff_seconds: float = 30.0,
        max_backoff_seconds: float = 3600.0,
    ):
        self.alerts_dir = alerts_dir
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    @property
    def pending_dir(self) -> Path:
        return self.alerts_dir / "pending"

    @property
    def sent_dir(self) -> Path:
        return self.alerts_dir / "sent"

    @property
    def outbox(self) -> Path:
        return self.alerts_dir / "outbox.txt"

    def has(self, run_id: str) -> bool:
        """Return whether the alert of `run_id` is already waiting or delivered."""
        _check_run_id(run_id)
        return (self.pending_dir / f"{run_id}.json").exists() or (
            self.sent_dir / f"{run_id}.json"
        ).exists()

    def enqueue(self, run_id: str, alert: Alert) -> bool:
        """Store the alert of `run_id` unless it is already waiting or delivered."""
        if self.has(run_id):
            return False
        record = {
            "run_id": run_id,
            "title": alert.title,
            "body": alert.body,
            "created_at": _now().isoformat(),
            "channels": {},
        }
        write_atomically(self.pending_dir / f"{run_id}.json", _dump(record))
        return True

    def pending(self) -> list[Path]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(self.pending_dir.glob("*.json"), key=lambda path: path.stat().st_mtime)

    def deliver_pending(self, channels: list[AlertChannel]) -> list[DeliveryResult]:
        """Try every waiting alert on every channel that does not have it yet and is due."""
        results = []
        for path in self.pending():
            try:
                record = _load_record(path)
            except (ValueError, KeyError, TypeError) as error:
                results.append(self._set_aside(path, error))
                continue
            results.extend(self._deliver_record(path, record, channels))
        return results

    def _set_aside(self, path: Path, error: Exception) -> DeliveryResult:
        """Rename an unreadable alert record, so that it stops blocking the others."""
        invalid = path.with_suffix(".invalid")
        path.replace(invalid)
        logger.error("Alert record %s is invalid (%s); moved it to %s", path, error, invalid)
        return DeliveryResult(
            path.stem,
            "all channels",
            False,
            f"alert record {path} is invalid ({type(error).__name__}: {error}); it was moved "
            f"to {invalid}. The sensor queues the run's alert again while the run's results "
            "are kept; otherwise repair the file and rename it back to .json",
        )

    def _deliver_record(self, path: Path, record: dict, channels: list[AlertChannel]):
        targets = channels or [None]
        results = []
        for channel in targets:
            channel_id = channel.id if channel else OUTBOX_CHANNEL
            label = channel.label if channel else str(self.outbox)
            state = record["channels"].setdefault(
                channel_id, {"label": label, "delivered_at": None, "failures": 0, "log": []}
            )
            if state["delivered_at"] or not self._is_due(state):
                continue

            # NOTE: the attempt is saved before sending, so that a record which cannot be
            # saved (full disk, read-only folder) is never sent again and again.
            state["attempt_started_at"] = _now().isoformat()
            write_atomically(path, _dump(record))

            alert = Alert(title=record["title"], body=record["body"])
            if channel is None:
                delivered, detail = self._append_to_outbox(record["run_id"], alert)
            else:
                delivered, detail = _notify(channel, alert)

            now = _now().isoformat()
            state["log"].append({"at": now, "delivered": delivered, "detail": detail})
            state["log"] = state["log"][-20:]
            if delivered:
                state["delivered_at"] = now
            else:
                state["failures"] += 1
                state["next_attempt_at"] = self._next_attempt(state["failures"]).isoformat()
            # NOTE: the record is saved after each channel, so a crash later in this loop never
            # makes a channel that already has the alert receive it again.
            write_atomically(path, _dump(record))
            results.append(DeliveryResult(record["run_id"], label, delivered, detail))

        if all(
            record["channels"].get(c.id if c else OUTBOX_CHANNEL, {}).get("delivered_at")
            for c in targets
        ):
            # The delivered record keeps who got it and when, not the names in the body.
            record.pop("body", None)
            write_atomically(self.sent_dir / path.name, _dump(record))
            path.unlink()
        return results

    def _is_due(self, state: dict) -> bool:
        due = state.get("next_attempt_at")
        return due is None or dt.datetime.fromisoformat(due) <= _now()

    def _next_attempt(self, failures: int) -> dt.datetime:
        delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (failures - 1))
        return _now() + dt.timedelta(seconds=delay)

    def _append_to_outbox(self, run_id: str, alert: Alert) -> tuple[bool, str]:
        make_private_dirs(self.outbox.parent)
        entry = f"=== {_now().isoformat()} run {run_id}\n{alert.title}\n\n{alert.body}\n"
        # Owner-only, like every other file that contains names and emails.
        handle = os.open(self.outbox, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(handle, "a", encoding="utf-8") as file:
            file.write(entry)
        return True, f"appended to {self.outbox}"


class _RedactingFilter(logging.Filter):
    """Remove a channel's secrets from the records that apprise and urllib3 log about it."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.url)
        record.args = None
        return True


# apprise logs whole URLs at DEBUG, and urllib3 logs each request's path, which may carry a token.
_LOGGERS_TO_REDACT = ("apprise", "urllib3.connectionpool", "requests")


@contextlib.contextmanager
def _redacted_logs(url: str):
    redacting = _RedactingFilter(url)
    loggers = [logging.getLogger(name) for name in _LOGGERS_TO_REDACT]
    for named_logger in loggers:
        named_logger.addFilter(redacting)
    try:
        yield
    finally:
        for named_logger in loggers:
            named_logger.removeFilter(redacting)


def _notify(channel: AlertChannel, alert: Alert) -> tuple[bool, str]:
    import apprise

    messages = []

    def keep_log(entry, _plugin=None):
        message = getattr(entry, "message", None) or str(entry)
        messages.append(message)

    try:
        with _redacted_logs(channel.url):
            notifier = apprise.Apprise()
            notifier.add(channel.url)
            result = notifier.notify(
                body=alert.body,
                title=alert.title,
                body_format=apprise.NotifyFormat.TEXT,
                log_callback=keep_log,
                log_level=logging.WARNING,
            )
    except Exception as error:  # noqa: BLE001 - a plugin bug must not stop the other channels
        return False, redact(f"{type(error).__name__}: {error}", channel.url)[:500]

    if bool(result):
        return True, "delivered"
    detail = "; ".join(messages[-3:]) or "apprise reported a failed delivery"
    return False, redact(detail, channel.url)[:500]


def _load_record(path: Path) -> dict:
    record = json.loads(path.read_text())
    for key, kind in (("run_id", str), ("title", str), ("body", str), ("channels", dict)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"'{key}' is missing or not a {kind.__name__}")
    return record


def _check_run_id(run_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", run_id):
        raise ValueError(f"Run id {run_id!r} is not a plain identifier")


def _dump(record: dict) -> bytes:
    return json.dumps(record, indent=2, ensure_ascii=False).encode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
