"""Exceptions raised while talking to a Qlik Cloud tenant.

Every message names the value at fault and what to do about it, and none contains the API key:
the key travels only in the `Authorization` header, which no message or log line includes.
"""


class QlikError(Exception):
    """Base class of every error this package raises about a tenant or its configuration."""


class QlikConfigError(QlikError):
    """A setting such as QLIK_TENANT_URL or QLIK_API_KEY is missing or invalid."""


class QlikAPIError(QlikError):
    """An error response of the users API, or a body that is not a users page.

    Attributes:
        status_code: HTTP status of the last response, or None for transport errors.
        page: 1-based number of the page being fetched when the error happened.
    """

    def __init__(self, message: str, *, status_code: int | None = None, page: int | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.page = page


class QlikAuthError(QlikAPIError):
    """The tenant rejected the API key (401) or its owner lacks the rights (403)."""


class QlikPaginationError(QlikAPIError):
    """A next link points elsewhere or back to a page already read, or pages disagree."""
