"""``p1logger simulate``: a realistic meter on stdout, a TCP port or a pseudo-terminal."""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import socket
import sys
import time
from datetime import datetime, timezone

from p1logger import settings
from p1logger.errors import ConfigError
from p1logger.inputs.simulator import SimulatorSource, simulator_keys
from p1logger.simulate import PROFILES

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    profiles = "\n".join(f"  {name:<4} {profile.description}" for name, profile in PROFILES.items())
    parser = subparsers.add_parser(
        "simulate",
        help="act as a smart meter: realistic telegrams on stdout, a TCP port or a pseudo-terminal",
        description="Generate the telegrams a real meter would send: a daily load curve with solar injection, "
        "monotonic counters per tariff, gas and water readings with their own capture times, and Belgian "
        "capacity-tariff values consistent with the meter's own quarter-hour averages.\n\nprofiles:\n" + profiles,
        epilog="examples:\n  p1logger simulate | p1logger dump --input -\n"
        "  p1logger simulate --tcp 127.0.0.1:2001      # then P1_SOURCE=socket://127.0.0.1:2001\n"
        "  p1logger simulate --pty                     # prints the device path to use\n"
        "  p1logger simulate --speed 3600 --count 86400 > day.txt   # a day, fast\n"
        "  p1logger simulate --encryption-key $KEY --count 10 > frames.bin   # an encrypted meter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    settings.add(parser, "P1_SIMULATOR_PROFILE")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--tcp", metavar="HOST:PORT", help="serve telegrams to TCP clients (read with socket://HOST:PORT)")
    target.add_argument("--pty", action="store_true", help="write to a new pseudo-terminal and print its path")
    settings.add(parser, "P1_SIMULATOR_SPEED", "P1_SIMULATOR_COUNT", "P1_SIMULATOR_START")
    parser.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same telegrams")
    settings.add(parser.add_argument_group("an encrypted meter (as in Luxembourg and Austria)"),
                 "P1_SIMULATOR_ENCRYPTION_KEY", "P1_SIMULATOR_AUTHENTICATION_KEY", env_default=False)
    parser.set_defaults(func=main)


def _start(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--start {text!r} is not an ISO 8601 time such as 2025-01-31T23:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def main(args: argparse.Namespace) -> int:
    keys = simulator_keys(args.encryption_key or settings.value("P1_SIMULATOR_ENCRYPTION_KEY"),
                          args.authentication_key or settings.value("P1_SIMULATOR_AUTHENTICATION_KEY"),
                          ("--encryption-key", "--authentication-key"))
    source = SimulatorSource(args.profile, speed=args.speed, start=_start(args.start), seed=args.seed, keys=keys)
    if args.tcp:
        return _serve_tcp(source, args.tcp, args.count)
    if args.pty:
        return _serve_pty(source, args.count)
    out = sys.stdout.buffer
    sent = 0
    while not args.count or sent < args.count:
        out.write(source.read())
        out.flush()
        sent += 1
    return 0


def _serve_tcp(source: SimulatorSource, address: str, count: int) -> int:
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        raise ConfigError(f"--tcp {address!r} must be HOST:PORT, e.g. 127.0.0.1:2001")
    server = socket.create_server((host, int(port_text)), reuse_port=False)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    clients: list[socket.socket] = []
    print(f"serving simulated telegrams on {address} (socket://{address})", file=sys.stderr, flush=True)
    sent = 0
    while not count or sent < count:
        telegram = source.read()
        for key, _ in selector.select(timeout=0):
            connection, _ = server.accept()
            connection.setblocking(False)
            clients.append(connection)
        for client in list(clients):
            try:
                client.send(telegram)
            except (BlockingIOError, OSError):
                # A client that cannot keep up or went away is dropped, not waited for.
                clients.remove(client)
                client.close()
        sent += 1
    return 0


def _serve_pty(source: SimulatorSource, count: int) -> int:
    controller, device = os.openpty()
    print(os.ttyname(device), flush=True)
    sent = 0
    try:
        while not count or sent < count:
            os.write(controller, source.read())
            sent += 1
    finally:
        time.sleep(0.2)  # let the reader take the last telegram before the device disappears
        os.close(controller)
        os.close(device)
    return 0
