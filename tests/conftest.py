"""Shared fixtures: the simulated tenant, a local SMTP server and a Dagster instance on disk."""

import shutil
import socket
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from dagster import DagsterInstance, build_sensor_context

from pipelines.simulator import SimulatedTenant

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-5f2c9e7a1b3d4c6e8f0a"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MailCollector:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


class SMTPServer:
    """A real SMTP server on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self):
        self.port = free_port()
        self.collector = MailCollector()
        self.controller = None

    def start(self):
        self.controller = Controller(self.collector, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self):
        with self.collector.lock:
            return list(self.collector.messages)

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=watch@example.com&to=admin@example.com"


@pytest.fixture
def smtp_server():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tenant():
    with SimulatedTenant(api_key=API_KEY, seed=7) as simulated:
        yield simulated


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def instance(dagster_home):
    with DagsterInstance.get() as dagster_instance:
        yield dagster_instance


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def pipeline_env(monkeypatch, tenant, data_dir):
    """The environment a deployment sets, pointing at the simulated tenant."""
    monkeypatch.setenv("QLIK_TENANT_URL", tenant.url)
    monkeypatch.setenv("QLIK_API_KEY", API_KEY)
    monkeypatch.setenv("QLIK_USERS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("QLIK_ALERT_URLS", raising=False)
    return monkeypatch


def run_pipeline(instance):
    """Run the scheduled job in this process, as the schedule would, and return the result."""
    from pipelines.definitions import defs

    job = defs.resolve_job_def("qlik_user_watch_job")
    return job.execute_in_process(instance=instance, raise_on_error=False)


class SensorDriver:
    """Evaluates the real alert sensor against an instance, carrying its cursor across ticks."""

    def __init__(self, instance, **alert_settings):
        from pipelines.resources import AlertResource, UserStoreResource

        self.instance = instance
        self.cursor = None
        self.resources = {
            "user_store": UserStoreResource(),
            "alerts": AlertResource(retry_backoff_seconds=0, **alert_settings),
        }

    def tick(self):
        from pipelines.sensors import user_alert_sensor

        context = build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result = user_alert_sensor(context)
        # The daemon keeps the cursor only when the tick does not raise.
        self.cursor = context.cursor
        return result


def wait_for(condition, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
