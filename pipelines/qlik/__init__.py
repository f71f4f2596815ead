"""Client for the users API of a Qlik Cloud tenant."""

from pipelines.qlik.client import USER_FIELDS, QlikClient, UsersPage, parse_tenant_url, tenant_key
from pipelines.qlik.errors import (
    QlikAPIError,
    QlikAuthError,
    QlikConfigError,
    QlikError,
    QlikPaginationError,
)

__all__ = [
    "USER_FIELDS",
    "QlikAPIError",
    "QlikAuthError",
    "QlikClient",
    "QlikConfigError",
    "QlikError",
    "QlikPaginationError",
    "UsersPage",
    "parse_tenant_url",
    "tenant_key",
]
