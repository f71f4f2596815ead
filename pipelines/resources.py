"""Dagster resources: the tenant's API, the data dir and the alert channels.

Each setting can be given as a field (tests, Python definitions) or, when the field is left
empty, through its environment variable, read when a run or sensor tick uses the resource. So the
definitions load without any variable set, no secret ever appears in the run config the UI
shows, and a missing value fails the run with a message naming the variable.
"""

import os
from pathlib import Path

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from pipelines.alerts import AlertChannel, AlertQueue, parse_alert_channels
from pipelines.qlik import QlikClient, QlikConfigError, parse_tenant_url, tenant_key
from pipelines.snapshots import TenantStore, make_private_dirs

TENANT_URL_VARIABLE = "QLIK_TENANT_URL"
API_KEY_VARIABLE = "QLIK_API_KEY"
DATA_DIR_VARIABLE = "QLIK_USERS_DATA_DIR"
ALERT_URLS_VARIABLE = "QLIK_ALERT_URLS"
KEEP_SNAPSHOTS_VARIABLE = "QLIK_USERS_KEEP_SNAPSHOTS"
DEFAULT_DATA_DIR = "data"
DEFAULT_KEEP_SNAPSHOTS = 48


def _setting(value: str | None, variable: str) -> str | None:
    if value is not None and value.strip():
        return value
    from_environment = os.environ.get(variable)
    if from_environment is not None and from_environment.strip():
        return from_environment
    return None


class QlikResource(ConfigurableResource):
    """The Qlik Cloud tenant whose users are watched."""

    tenant_url: str | None = Field(
        default=None,
        description="Tenant base URL, e.g. https://acme.eu.qlikcloud.com; "
        "empty means the QLIK_TENANT_URL environment variable.",
    )
    api_key: str | None = Field(
        default=None,
        repr=False,
        description="API key; empty means the QLIK_API_KEY environment variable.",
    )
    page_size: int = Field(default=100, description="Users per page, 1 to 100.")
    timeout_seconds: float = Field(default=30.0, description="Timeout of one request.")
    max_attempts: int = Field(default=6, description="Attempts per page before the run fails.")
    retry_timeout_seconds: float = Field(
        default=300.0, description="Maximum seconds spent retrying one page."
    )
    wait_initial_seconds: float = Field(
        default=1.0, description="First backoff between retries; it doubles up to 30 s."
    )
    requests_per_minute: float = Field(
        default=900.0,
        description="Pace of requests once `burst` requests are spent; Qlik allows 1,000 a "
        "minute per user and tenant, shared with other tools using the same key.",
    )
    burst: int = Field(default=900, description="Requests sent before pacing starts.")

    def resolved_tenant_url(self) -> httpx.URL:
        return parse_tenant_url(_setting(self.tenant_url, TENANT_URL_VARIABLE), TENANT_URL_VARIABLE)

    def tenant(self) -> str:
        """Folder name of this tenant's state under the data dir."""
        return tenant_key(self.resolved_tenant_url())

    def get_client(self) -> QlikClient:
        url = self.resolved_tenant_url()
        api_key = _setting(self.api_key, API_KEY_VARIABLE)
        if api_key is None:
            raise QlikConfigError(
                f"{API_KEY_VARIABLE} is not set; create an API key in the tenant's profile "
                "settings (API keys) and set it in .env or the deployment's environment"
            )
        return QlikClient(
            str(url),
            api_key,
            page_size=self.page_size,
            timeout=self.timeout_seconds,
            max_attempts=self.max_attempts,
            retry_timeout=self.retry_timeout_seconds,
            wait_initial=self.wait_initial_seconds,
            wait_max=max(30.0, self.wait_initial_seconds),
            requests_per_minute=self.requests_per_minute,
            burst=self.burst,
        )


class UserStoreResource(ConfigurableResource):
    """The data dir: snapshots, comparison results and alert state, one folder per tenant."""

    data_dir: str | None = Field(
        default=None,
        description="Folder for snapshots and results; empty means QLIK_USERS_DATA_DIR, "
        "or data/ when that is unset.",
    )
    keep_snapshots: int | None = Field(
        default=None,
        description="Snapshots and result folders kept per tenant; older ones are deleted, "
        "except the baseline. Empty means QLIK_USERS_KEEP_SNAPSHOTS, or 48 when unset.",
    )

    def snapshots_to_keep(self) -> int:
        if self.keep_snapshots is not None:
            source, text = "keep_snapshots", str(self.keep_snapshots)
        else:
            source, text = KEEP_SNAPSHOTS_VARIABLE, _setting(None, KEEP_SNAPSHOTS_VARIABLE)
            if text is None:
                return DEFAULT_KEEP_SNAPSHOTS
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise QlikConfigError(
                f"{source}={text!r} is not a whole number of at least 1; set it to the number "
                f"of snapshots to keep per tenant, e.g. {DEFAULT_KEEP_SNAPSHOTS}"
            )
        return value

    def root(self) -> Path:
        path = Path(_setting(self.data_dir, DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR)
        if path.exists() and not path.is_dir():
            raise QlikConfigError(
                f"{DATA_DIR_VARIABLE}={str(path)!r} is a file, not a folder; point it at a "
                "folder (it is created if missing)"
            )
        return path.absolute()

    def for_tenant(self, tenant: str) -> TenantStore:
        return TenantStore(self.root(), tenant)

    def tenants(self) -> list[TenantStore]:
        """Return a store for every tenant that has a folder under the data dir."""
        root = self.root()
        if not root.is_dir():
            return []
        return [
            TenantStore(root, path.name)
            for path in sorted(root.iterdir())
            if path.is_dir() and not path.name.startswith(".")
        ]

    def health_dir(self) -> Path:
        """Return the folder of the pipeline's own health records and alarms, beside tenants."""
        root = self.root()
        make_private_dirs(root)
        return root / ".health"


class AlertResource(ConfigurableResource):
    """Alert destinations: apprise URLs, or the tenant's outbox file when none are set."""

    urls: str | None = Field(
        default=None,
        repr=False,
        description="Apprise URLs separated by whitespace or commas; empty means "
        "QLIK_ALERT_URLS, and with neither, alerts go to an outbox file in the data dir.",
    )
    retry_backoff_seconds: float = Field(
        default=30.0, description="Wait before retrying a failed channel; doubles per failure."
    )
    max_listed_users: int = Field(
        default=50, description="Users listed per section of an alert; the rest are counted."
    )

    def channels(self) -> list[AlertChannel]:
        return parse_alert_channels(_setting(self.urls, ALERT_URLS_VARIABLE))

    def queue(self, store: TenantStore) -> AlertQueue:
        return AlertQueue(store.alerts_dir, backoff_seconds=self.retry_backoff_seconds)
