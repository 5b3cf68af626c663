"""The sandbox PKI's responders (TSA, OCSP, CRL, certificates, lists) in a child process.

Certomancer's handlers sign and encode synchronously (~2.5 to 4 ms of CPU a TSA reply);
in a thread of the daemon they held the daemon's GIL, so under load every request of
the daemon waited for them in slices (``bench/bench_mixed.py``: ~3 % of the wall time,
and the GIL's hand-overs). Production's TSA and OCSP responders are other machines'. The
daemon binds the port (a taken port is reported as before) and hands the listening
socket to ``python -m sidecar.sandbox.services_process`` (:mod:`sidecar.child_process`),
which answers once it serves, and ends with the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

from ..child_process import child_config, say, until_parent_ends

log = logging.getLogger("sidecar.sandbox")


def _child_main() -> None:
    config = child_config()
    logging.basicConfig(
        level=int(config.get("log_level", logging.WARNING)),
        format="%(name)s: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    sock = socket.socket(fileno=int(config["fd"]))
    try:
        asyncio.run(_serve(Path(config["directory"]), str(config["host"]), sock))
    except Exception:
        log.exception("the sandbox PKI's responders stopped")
        sys.exit(1)


async def _serve(directory: Path, host: str, sock: socket.socket) -> None:
    from aiohttp import web

    from ..ports import bind_error
    from .pki import SandboxError, ensure_sandbox_pki
    from .services import _cannot_serve, build_app

    try:
        pki = ensure_sandbox_pki(directory, host=host)
        runner = web.AppRunner(build_app(pki), access_log=None, handle_signals=False)
        await runner.setup()
    except SandboxError as exc:
        say({"error": str(exc)})
        return
    try:
        try:
            await web.SockSite(runner, sock).start()
        except OSError as exc:
            say({"error": _cannot_serve(pki, bind_error(exc))})
            return
        say({"url": pki.base_url})
        await until_parent_ends().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    _child_main()
