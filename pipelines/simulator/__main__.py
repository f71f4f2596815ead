"""Run a simulated Qlik tenant until SIGINT or SIGTERM, for demos and browser tests."""

import argparse
import logging
import signal
import sys
import threading

from .server import validate_loopback_host
from .tenant import SimulatedTenant


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; a non-loopback --host exits with a usage error."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.simulator",
        description="Serve a simulated Qlik Cloud users API on a loopback address.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--api-key", default="sim-api-key", help="key clients send as a Bearer token"
    )
    parser.add_argument(
        "--seed-users", type=int, default=0, metavar="COUNT", help="number of users to generate"
    )
    parser.add_argument(
        "--invited-share",
        type=float,
        default=0.1,
        help="share of generated users that are invited, 0 to 1 (default: 0.1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the user generator (default: 0)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every API request"
    )
    parser.add_argument(
        "--rate-limit-per-minute",
        type=float,
        default=None,
        metavar="REQUESTS",
        help="respond 429 beyond this many API requests a minute (default: no limit)",
    )
    parser.add_argument(
        "--rate-limit-burst",
        type=int,
        default=None,
        metavar="REQUESTS",
        help="API requests allowed at once before the per-minute rate applies "
        "(default: the per-minute rate)",
    )
    arguments = parser.parse_args(argv)

    try:
        arguments.host = validate_loopback_host(arguments.host)
    except ValueError as error:
        parser.error(str(error))
    if arguments.seed_users < 0:
        parser.error(f"--seed-users must be 0 or more, got {arguments.seed_users}")
    per_minute = arguments.rate_limit_per_minute
    if per_minute is not None and not 0 < per_minute < float("inf"):
        parser.error(f"--rate-limit-per-minute must be a positive number, got {per_minute}")
    if arguments.rate_limit_burst is not None:
        if per_minute is None:
            parser.error("--rate-limit-burst needs --rate-limit-per-minute")
        if arguments.rate_limit_burst < 1:
            parser.error(f"--rate-limit-burst must be 1 or more, got {arguments.rate_limit_burst}")

    return arguments


def main(argv: list[str] | None = None) -> int:
    """Start the tenant, print its URL on one line and serve until a stop signal."""
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    stop_requested = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda number, frame: stop_requested.set())

    tenant = SimulatedTenant(
        api_key=arguments.api_key,
        host=arguments.host,
        port=arguments.port,
        seed=arguments.seed,
        rate_limit_per_minute=arguments.rate_limit_per_minute,
        rate_limit_burst=arguments.rate_limit_burst,
    )
    tenant.latency = arguments.latency
    tenant.seed_users_bulk(arguments.seed_users, invited_share=arguments.invited_share)
    try:
        tenant.start()
    except OSError as error:
        print(f"Failed to bind {arguments.host}:{arguments.port}: {error}", file=sys.stderr)
        return 1

    print(f"Simulated Qlik tenant at {tenant.url}", flush=True)
    stop_requested.wait()
    tenant.stop()

    return 0


if __name__ == "__main__":
    sys.exit(main())
