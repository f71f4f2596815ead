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
    arguments = parser.parse_args(argv)

    try:
        arguments.host = validate_loopback_host(arguments.host)
    except ValueError as error:
        parser.error(str(error))
    if arguments.seed_users < 0:
        parser.error(f"--seed-users must be 0 or more, got {arguments.seed_users}")

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
        api_key=arguments.api_key, host=arguments.host, port=arguments.port, seed=arguments.seed
    )
    tenant.latency = arguments.latency
    tenant.seed_users(arguments.seed_users, invited_share=arguments.invited_share)
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
