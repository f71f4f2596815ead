"""Pacing under the simulator's rate limit: 429s drawn and the share of the allowed rate used."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.extraction import (
    API_KEY,
    TENANT_SEED,
    check_complete,
    first_page_url,
    resource_client_options,
    run_contender,
)
from benchmarks.tenant import IndexedTenant

# A scaled-down Qlik limit (Qlik's users API allows 1,000 a minute), so the paced phase fits in
# half a minute. The client stays a little under both numbers, as the defaults (900 a minute,
# burst 900) stay under Qlik's 1,000.
SIMULATOR_PER_MINUTE = 600
SIMULATOR_BURST = 50
CLIENT_PER_MINUTE = 570
CLIENT_BURST = 40


def benchmark_pacing(pages: int, latency: float) -> dict:
    """Extract `pages` pages with ours under the simulator's rate limit.

    The steady share of the allowed rate is the arrival rate at the simulator of the second
    half of the requests, divided by the simulator's rate. It skips at least twice the client's
    burst, so the burst and the tokens gained meanwhile are spent. The overall share is the
    requests sent divided by what the simulator would have accepted in the same time: its
    burst plus its rate times the seconds from the first to the last request.
    """
    users = pages * 100
    tenant = IndexedTenant(
        API_KEY,
        seed=TENANT_SEED,
        rate_limit_per_minute=SIMULATOR_PER_MINUTE,
        rate_limit_burst=SIMULATOR_BURST,
    ).start()
    try:
        tenant.seed_users_bulk(users)
        tenant.freeze()
        options = dict(
            resource_client_options(tenant.url),
            requests_per_minute=CLIENT_PER_MINUTE,
            burst=CLIENT_BURST,
        )
        first_url = first_page_url(tenant.url)
        tenant.latency = latency
        # Setting the limit again refills the bucket, so the run starts with the full burst.
        tenant.tenant.set_rate_limit(SIMULATOR_PER_MINUTE, SIMULATOR_BURST)
        with tempfile.TemporaryDirectory(prefix="bench-pacing-") as folder:
            result = run_contender(
                tenant, "ours", data_dir=Path(folder), client_options=options, first_url=first_url
            )
        arrivals = tenant.listing_arrivals
    finally:
        tenant.stop()

    if result["rate_limited"] == 0:
        check_complete(result, "ours", users)
    rate = SIMULATOR_PER_MINUTE / 60
    span = arrivals[-1] - arrivals[0]
    paced = arrivals[max(2 * CLIENT_BURST, len(arrivals) // 2) :]
    steady_rate = (len(paced) - 1) / (paced[-1] - paced[0])
    return {
        "pages": pages,
        "latency": latency,
        "seconds": result["seconds"],
        "requests": result["requests"],
        "rate_limited": result["rate_limited"],
        "retries": result.get("retries", 0),
        "steady_rate_per_minute": steady_rate * 60,
        "steady_share": steady_rate / rate,
        "overall_share": len(arrivals) / (SIMULATOR_BURST + rate * span),
        "simulator_per_minute": SIMULATOR_PER_MINUTE,
        "simulator_burst": SIMULATOR_BURST,
        "client_per_minute": CLIENT_PER_MINUTE,
        "client_burst": CLIENT_BURST,
        "peak_rss_mb": result["peak_rss_mb"],
    }
