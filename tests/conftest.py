"""Shared fixtures live in tests/fixtures/, one module per real part.

Here only what every test gets: the conventional ports held for the whole run.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.daemon",
    "tests.fixtures.cns",
    "tests.fixtures.sandbox",
    "tests.fixtures.trust",
    "tests.fixtures.softhsm",
    "tests.fixtures.pades",
    "tests.fixtures.xades",
    "tests.fixtures.postgres",
]

#: The daemon's default port and the ports sandboxes used before they took free ones.
FIXED_PORTS = (7420, 7421, 7422)


@pytest.fixture(scope="session", autouse=True)
def hold_fixed_ports() -> Iterator[dict[int, socket.socket]]:
    """Hold 127.0.0.1:7420-7422 for the whole run, where they are free.

    A test that silently relies on one of them then fails here as it would beside a
    developer's running sandbox (which holds them otherwise). The sockets are bound
    without SO_REUSEADDR (no other bind succeeds) and never listen (a connection is
    refused at once instead of hanging).
    """
    held: dict[int, socket.socket] = {}
    for port in FIXED_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()  # taken already: by a sandbox, another run; held either way
        else:
            held[port] = sock
    yield held
    for sock in held.values():
        sock.close()
