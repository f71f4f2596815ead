"""Shared fixtures: the simulated tenant, a local SMTP server and a Dagster instance on disk."""

import shutil
import socket
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
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
        # Accepts any login over plain SMTP, so mailto:// URLs with a password can deliver.
        self.controller = Controller(
            self.collector,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=lambda *args: AuthResult(success=True),
            auth_require_tls=False,
        )
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


FAST_RETRIES = {
    "resources": {"qlik": {"config": {"max_attempts": 3, "wait_initial_seconds": 0.01}}}
}


def run_pipeline(instance, run_config=None):
    """Run the scheduled job in this process, as the schedule would, and return the result."""
    from pipelines.definitions import defs

    job = defs.resolve_job_def("qlik_user_watch_job")
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)


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


class WebhookServer:
    """An HTTP server on 127.0.0.1 that records the JSON posted to it by apprise's json://.

    `mode` sets the response: "ok" (200), "429", "500", or "slow" (waits `delay` seconds).
    """

    def __init__(self):
        import http.server

        self.bodies = []
        self.attempts = 0
        self.mode = "ok"
        self.delay = 2.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                server.attempts += 1
                if server.mode == "slow":
                    time.sleep(server.delay)
                if server.mode in ("429", "500"):
                    self.send_response(int(server.mode))
                    if server.mode == "429":
                        self.send_header("Retry-After", "1")
                    self.end_headers()
                    return
                server.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, token="hook-token-7c1d9e", **params) -> str:
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"json://127.0.0.1:{self.port}/{token}" + (f"?{query}" if query else "")

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook():
    server = WebhookServer()
    yield server
    server.stop()


def baseline_then_changes(tenant, instance, *people):
    """Run once for the baseline, add `people`, run again; return the added users."""
    tenant.seed_users(30)
    assert run_pipeline(instance).success
    added = [tenant.add_user(name, email) for name, email in people]
    assert run_pipeline(instance).success
    return added
