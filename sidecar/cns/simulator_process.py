"""The sandbox's CNS simulator in a process of its own, started and stopped with the daemon.

``serve --sandbox`` with no CNS URL configured forwards to the simulator
(:mod:`sidecar.cns.simulator`). Served from the daemon's own process, the simulator's
check of every deposit (the XSD, then our XAdES validator at B-LT: canonicalization,
digests, the signer's and the TSA's paths) ran on the daemon's event loop and held its
GIL: under a mixed load that was half of all the CPU the daemon's process spent (py-spy,
``bench/bench_mixed.py``), and every read waited behind it. The real CNS checks on its
own servers; the sandbox now does too, in a child process:

- :func:`serve_simulator_process` starts ``python -m sidecar.cns.simulator_process``
  (:mod:`sidecar.child_process`: its configuration on stdin, one JSON line back) and
  returns once the child has bound its port (a port taken is one clear line, as
  before). The URL is unchanged.
- The child ends with the daemon, however the daemon ends (:mod:`sidecar.child_process`).
- It holds no key and no state the daemon needs; its bookings live as long as it does,
  as they did in the daemon (``GET /_simulator/stats``, whose ``pid`` is the child's).

Production has no such process: it is the sandbox's stand-in for the CNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..child_process import child_config, run_child, say, until_parent_ends

if TYPE_CHECKING:
    from lxml import etree

    from .documents import MessageRule
    from .simulator import CnsSimulator

__all__ = ["SimulatorChild", "SimulatorConfig", "serve_simulator_process"]

log = logging.getLogger("sidecar.cns.simulator")


@dataclass(frozen=True)
class SimulatorConfig:
    """What the child needs to check deposits as the in-process simulator did: plain
    values (paths, strings), read again from files in the child."""

    host: str
    port: int
    #: The PEM file of the sandbox's trust anchors: XAdES verified at B-LT with them.
    roots: str
    #: The fee note's XSD (``cns.simulator_xsd`` or the ``fee-note`` profile's).
    xsd: str | None = None
    #: ``[cns] uuid_xpath`` and the profile files of the daemon's :class:`MessageRule`.
    uuid_xpath: str = ""
    profiles: tuple[str, ...] = field(default_factory=tuple)
    log_level: int = logging.WARNING


@dataclass
class SimulatorChild:
    """The running child: its URL and its process id."""

    url: str
    pid: int


@contextlib.asynccontextmanager
async def serve_simulator_process(config: SimulatorConfig) -> AsyncIterator[SimulatorChild]:
    """Run the simulator in a child process until the block exits; yields its URL.

    Raises :class:`~sidecar.child_process.ChildStartError` if the port cannot be bound
    (``reason``: "the port is taken"...) or the child does not start.
    """
    async with run_child("sidecar.cns.simulator_process", asdict(config)) as (said, pid):
        yield SimulatorChild(str(said["url"]), pid)


# -- the child -------------------------------------------------------------------------


def _child_main() -> None:
    """The child: bind, say so, serve until the daemon ends."""
    config = SimulatorConfig(**child_config())
    logging.basicConfig(
        level=config.log_level, format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr
    )
    from ..ports import bind, bind_error

    # Bound before the signing stack is imported: the daemon learns of a taken port at
    # once, and connections queue in the backlog until the server answers.
    try:
        sock = bind(config.host, config.port)
        sock.listen(128)
    except OSError as exc:
        say({"error": bind_error(exc)})
        return
    port = sock.getsockname()[1]
    # Ready means ready: the simulator built (the signing stack imported, the roots and
    # the XSD read) before the daemon is told, not while the daemon and its callers' first
    # requests run beside a core-long import.
    simulator = _simulator(config)
    say({"url": f"http://{config.host}:{port}"})
    try:
        asyncio.run(_serve(simulator, sock))
    except Exception:
        # After the port was announced (the daemon runs on): its log says why, and its
        # ``cns`` health check says the simulator cannot be reached.
        log.exception("the sandbox's CNS simulator stopped")
        sys.exit(1)


def _simulator(config: SimulatorConfig) -> CnsSimulator:
    from ..signing.profiles import load_profile
    from .documents import MessageRule
    from .simulator import SANDBOX_KEPT_BOOKINGS, SANDBOX_KEPT_KEYS, CnsSimulator, xades_verifier

    rule = MessageRule.of(config.uuid_xpath, [load_profile(Path(p)) for p in config.profiles])
    return CnsSimulator(
        xsd=Path(config.xsd) if config.xsd else None,
        verifier=xades_verifier(Path(config.roots)),
        uuid_reader=_uuid_reader(rule),
        # Nothing reads the booked notes of the sandbox's simulator: a few, not 256.
        kept_bookings=SANDBOX_KEPT_BOOKINGS,
        kept_keys=SANDBOX_KEPT_KEYS,
    )


async def _serve(simulator: CnsSimulator, sock: socket.socket) -> None:
    from .simulator import serve_simulator

    ended = until_parent_ends()
    async with serve_simulator(simulator, sock=sock):
        log.debug("CNS simulator (pid %d) serving", os.getpid())
        await ended.wait()


def _uuid_reader(rule: MessageRule) -> Callable[[etree._Element], str | None]:
    """The simulator finds a fee note's UUID where the daemon does (the CNS knows its
    own schema as the operator's configuration describes it)."""
    from .documents import DocumentError

    def read(root: etree._Element) -> str | None:
        try:
            return rule.uuid_of(root)
        except DocumentError:
            return None

    return read


if __name__ == "__main__":
    _child_main()
