"""A simulated Qlik Cloud tenant that serves `GET /api/v1/users` on a loopback port.

It follows the contract of Qlik's users API: Bearer API keys, `limit` (1 to 100, default 20),
`sort`, `fields`, a SCIM `filter`, `totalResults`, keyset pagination through opaque `next` and
`prev` cursors in absolute `links`, and Qlik's error body. It also serves
`GET /api/v1/users/{id}`. Users are generated from a seed, so tests are reproducible.

Faults make listing responses misbehave for chosen pages, a given number of times:

    "429"              429 with a Retry-After header; options `retry_after` (whole seconds,
                       default 1) and `retry_after_http_date` (send an HTTP date instead)
    "500" ... "504"    that status (500, 502, 503 or 504) with an HTML body, as a proxy sends
    "slow"             wait `delay` seconds (default 2), then send the normal page
    "reset"            announce the full Content-Length, send half the body, then reset the
                       connection
    "truncated_json"   200 with the first half of the JSON body and a matching Content-Length
    "invalid_json"     200 application/json whose body is not JSON
    "html_200"         200 text/html sign-in page
    "missing_data"     200 JSON without the `data` key
    "user_without_id"  the first user of the page has no `id`
    "duplicate_id"     the first user carries the id of the previous page's last user (on
                       page 1, the last user carries the id of the first one)
    "empty_page"       `data: []` with a `next` link that resumes at this page's first user
    "repeat_next"      `next` points back at the previous page's URL (its own URL on page 1)
    "foreign_next"     `next` on another host: option `next_url`, by default the real link
                       with host 127.0.0.2; the simulator never contacts that host
    "scheme_next"      `next` with https instead of http, same host and port
    "401", "403"       that status with Qlik's error body
    "partial"          no `next` link although more users follow

An optional rate limit (`rate_limit_per_minute` and `rate_limit_burst`, or `set_rate_limit`)
models Qlik's per-key limit with a token bucket: a request over it gets 429 with a `Retry-After`
in whole seconds, and its request log entry has `rate_limited` set.

The simulator also has its own HTTP API under /_simulator/ (see the admin module), which is not
part of Qlik's API. It lets another process add, invite, activate and delete users, inject faults
and read the request log. Requests to it need the same API key and are not logged.

Run it on its own with `python -m pipelines.simulator --port 8765 --seed-users 250`.
"""

from .faults import FAULT_KINDS
from .store import UserStore
from .tenant import SimulatedTenant
from .users import USER_STATUSES

__all__ = ["FAULT_KINDS", "USER_STATUSES", "SimulatedTenant", "UserStore"]
