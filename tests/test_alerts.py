"""Alert text, channels and the delivery queue, without Dagster."""

import json

import pyarrow as pa
import pytest

from pipelines.alerts import (
    Alert,
    AlertConfigError,
    AlertQueue,
    build_alert,
    clean_text,
    parse_alert_channels,
    redact,
)


def users(*rows):
    return pa.table(
        {
            "name": [row[0] for row in rows],
            "email": [row[1] for row in rows],
            "status": [row[2] if len(row) > 2 else "active" for row in rows],
        }
    )


EMPTY = users()


def test_alert_lists_one_user_per_line():
    alert = build_alert(
        "acme.eu.qlikcloud.com",
        users(("Zoë Ångström", "zoe@example.com"), ("Doe, Jane", "jane@example.com", "invited")),
        users(("<b>Bob</b>", "bob@example.com")),
    )

    lines = alert.body.splitlines()
    assert alert.title == "2 new users and 1 activated user in acme.eu.qlikcloud.com"
    assert "- Zoë Ångström <zoe@example.com>" in lines
    assert "- Doe, Jane <jane@example.com> [invited]" in lines
    assert "- <b>Bob</b> <bob@example.com>" in lines
    assert lines.index("New users (2):") < lines.index("Activated users, invite accepted (1):")


def test_alert_without_activations_has_no_activated_section():
    alert = build_alert("t", users(("Ann", "ann@example.com")), EMPTY)

    assert alert.title == "1 new user in t"
    assert "Activated" not in alert.body


def test_alert_counts_users_beyond_the_listed_ones():
    many = users(*[(f"User {i}", f"u{i}@example.com") for i in range(120)])

    alert = build_alert("t", many, EMPTY, max_listed=50)

    assert "- User 49 <u49@example.com>" in alert.body
    assert "User 50 " not in alert.body
    assert "- ... and 70 more" in alert.body


def test_clean_text_removes_line_breaks_and_controls():
    assert clean_text("Eve\r\nBcc: x@example.com") == "Eve Bcc: x@example.com"
    assert clean_text("a\x00b\x1bc\u2028d") == "a b c d"
    assert clean_text(None) == ""


def test_clean_text_truncates_with_ellipsis():
    text = clean_text("x" * 300, max_length=10)

    assert text == "x" * 9 + "…"


def test_long_name_keeps_title_short():
    alert = build_alert("tenant-" + "y" * 300, users(("Ann", "a@example.com")), EMPTY)

    assert len(alert.title) == 120
    assert alert.title.endswith("…")


def test_parse_alert_channels_splits_and_keeps_query_commas():
    channels = parse_alert_channels(
        "mailto://user:pw@127.0.0.1:2525?from=a@example.com&to=b@example.com,c@example.com "
        "json://127.0.0.1:9999/hook-secret-path, json://127.0.0.1:9998/other"
    )

    assert len(channels) == 3
    assert "b@example.com,c@example.com" in channels[0].url


def test_channel_label_has_no_secrets():
    channel = parse_alert_channels(
        "mailto://user:hunter2pass@127.0.0.1:2525?from=a@example.com&to=b@example.com"
    )[0]
    webhook = parse_alert_channels("json://127.0.0.1:9999/token-abcdef123456")[0]

    assert "hunter2pass" not in channel.label
    assert "user" not in channel.label
    assert "token-abcdef123456" not in webhook.label
    assert webhook.label == "json://127.0.0.1:9999"


def test_unknown_alert_url_names_variable_not_secret():
    with pytest.raises(AlertConfigError) as raised:
        parse_alert_channels("nosuchscheme://secret-token-987@example.invalid")

    assert "QLIK_ALERT_URLS" in str(raised.value)
    assert "secret-token-987" not in str(raised.value)


def test_redact_removes_password_path_and_query_values():
    url = "json://user:pass-w0rd@127.0.0.1:1/hooks/tok3n-value?key=qu3ry-secret"
    text = "failed posting to json://user:pass-w0rd@127.0.0.1:1/hooks/tok3n-value?key=qu3ry-secret"

    redacted = redact(text, url)

    for secret in ("pass-w0rd", "tok3n-value", "qu3ry-secret"):
        assert secret not in redacted


def test_queue_enqueues_each_run_once(tmp_path):
    queue = AlertQueue(tmp_path / "alerts", backoff_seconds=0)

    assert queue.enqueue("run1", Alert("t", "b")) is True
    assert queue.enqueue("run1", Alert("t", "b")) is False
    assert len(queue.pending()) == 1


def test_queue_without_channels_appends_to_outbox_once(tmp_path):
    queue = AlertQueue(tmp_path / "alerts", backoff_seconds=0)
    queue.enqueue("run1", Alert("1 new user in t", "New users (1):\n- Ann <a@example.com>\n"))

    first = queue.deliver_pending([])
    second = queue.deliver_pending([])
    queue.enqueue("run1", Alert("again", "again"))
    third = queue.deliver_pending([])

    outbox = queue.outbox.read_text()
    assert [result.delivered for result in first] == [True]
    assert second == []
    assert third == []
    assert outbox.count("1 new user in t") == 1
    assert "again" not in outbox
    assert queue.pending() == []


def test_failed_channel_is_recorded_and_backs_off(tmp_path):
    queue = AlertQueue(tmp_path / "alerts", backoff_seconds=3600)
    queue.enqueue("run1", Alert("t", "b"))
    closed = parse_alert_channels("json://127.0.0.1:9/hook-secret-42")

    first = queue.deliver_pending(closed)
    second = queue.deliver_pending(closed)

    record = json.loads(queue.pending()[0].read_text())
    state = next(iter(record["channels"].values()))
    assert [result.delivered for result in first] == [False]
    assert second == []
    assert state["failures"] == 1
    assert state["delivered_at"] is None
    assert "hook-secret-42" not in queue.pending()[0].read_text()


def test_delivered_record_drops_names(tmp_path):
    queue = AlertQueue(tmp_path / "alerts", backoff_seconds=0)
    queue.enqueue("run1", Alert("1 new user in t", "New users (1):\n- Private Person <p@x>\n"))

    queue.deliver_pending([])

    sent = (queue.sent_dir / "run1.json").read_text()
    assert "Private Person" not in sent
    assert json.loads(sent)["channels"]["outbox"]["delivered_at"]


def test_thousands_of_users_stay_within_channel_limits():
    names = [(f"{'Long Name ' * 30}{i}", f"user{i}@example.com") for i in range(5000)]

    alert = build_alert("acme.eu.qlikcloud.com", users(*names), users(*names[:3000]))

    assert alert.title == "5000 new users and 3000 activated users in acme.eu.qlikcloud.com"
    assert "- ... and 4950 more" in alert.body
    assert "- ... and 2950 more" in alert.body
    # Teams cards take about 28 KB and Slack messages 40,000 characters.
    assert len(alert.body.encode()) < 28_000
