"""Show the whole pipeline on this machine: `python -m pipelines.demo` (or `make demo`).

Starts the simulated tenant and a local SMTP server on 127.0.0.1 and runs the job once to set the
baseline. Then it adds two users, activates an invited one and runs the job again. Last, it
starts the real Dagster daemon, whose `user_alert_sensor` delivers the alert, and prints the
email received.
Everything lives in a temporary folder that is removed at the end.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_API_KEY = "demo-key-not-secret"
DELIVERY_TIMEOUT_SECONDS = 120


class _Mailbox:
    def __init__(self):
        self.messages = []
        self.received = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        self.received.set()
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _run_job(instance) -> None:
    from pipelines.definitions import defs

    result = defs.resolve_job_def("qlik_user_watch_job").execute_in_process(instance=instance)
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata[materialization.asset_key.to_user_string()] = materialization.metadata
    print(
        f"    qlik_users: {metadata['qlik_users']['dagster/row_count'].value} users in "
        f"{metadata['qlik_users']['pages'].value} pages; "
        f"new_users: {metadata['new_users']['dagster/row_count'].value}; "
        f"activated_users: {metadata['activated_users']['dagster/row_count'].value}",
        flush=True,
    )


def main() -> int:
    from aiosmtpd.controller import Controller
    from dagster import DagsterInstance

    from pipelines.simulator import SimulatedTenant

    workdir = Path(tempfile.mkdtemp(prefix="qlik-user-watch-demo-"))
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")

    mailbox = _Mailbox()
    smtp_port = _free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    daemon = None

    try:
        smtp.start()
        tenant = SimulatedTenant(api_key=DEMO_API_KEY, seed=42).start()
        tenant.seed_users(230)
        pending = tenant.invite_user("Priya Raman", "priya.raman@example.com")

        os.environ.update(
            {
                "DAGSTER_HOME": str(dagster_home),
                "QLIK_TENANT_URL": tenant.url,
                "QLIK_API_KEY": DEMO_API_KEY,
                "QLIK_USERS_DATA_DIR": str(workdir / "data"),
                "QLIK_ALERT_URLS": (
                    f"mailto://127.0.0.1:{smtp_port}"
                    "?from=qlik-user-watch@example.com&to=tenant-admin@example.com"
                ),
                "QLIK_ALERT_SENSOR_INTERVAL_SECONDS": "5",
            }
        )
        _step(
            f"Simulated tenant at {tenant.url} with {len(tenant.users())} users; "
            f"SMTP server on 127.0.0.1:{smtp_port}; state in {workdir}"
        )

        with DagsterInstance.get() as instance:
            _step("Run 1: extract the users and set the baseline")
            _run_job(instance)

            _step("In the tenant: two people join and Priya Raman accepts her invite")
            tenant.add_user("Zoë Ångström", "zoe.angstrom@example.com")
            tenant.invite_user("Doe, Jane", "jane.doe@example.com")
            tenant.activate_user(pending["id"])

            _step("Run 2: extract again and compare with the baseline")
            _run_job(instance)

        _step("Start the Dagster daemon; user_alert_sensor delivers the alert")
        daemon = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(REPO / "workspace.yaml"),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not mailbox.received.wait(DELIVERY_TIMEOUT_SECONDS):
            print(
                f"No alert arrived within {DELIVERY_TIMEOUT_SECONDS} s; see the sensor ticks "
                f"with DAGSTER_HOME={dagster_home} dagster dev",
                file=sys.stderr,
            )
            return 1

        message = mailbox.messages[0]
        _step("Alert delivered by email:")
        print(
            f"    From:    {message['From']}\n    To:      {message['To']}\n"
            f"    Subject: {message['Subject']}\n"
        )
        for line in message.get_body(preferencelist=("plain",)).get_content().splitlines():
            print(f"    {line}")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        smtp.stop()
        time.sleep(0.1)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
