"""Graceful stop: SIGTERM while a slow request is under way lets it finish, exit 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.fixtures.daemon import free_port

# The real daemon (``sidecar serve``) with one extra test route that takes as long
# as it is told to: no route of the product is slow on demand.
SLOW_DAEMON = """
import asyncio, sys
from aiohttp import web
import sidecar.server as server

real_create_app = server.create_app

def create_app(*args, **kwargs):
    app = real_create_app(*args, **kwargs)

    async def slow(request):
        seconds = float(request.query["seconds"])
        await asyncio.sleep(seconds)
        return web.json_response({"slept": seconds})

    app.router.add_get("/test/slow", slow)
    return app

server.create_app = create_app
from sidecar.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_slow_request_lets_it_finish_and_exits_0(tmp_path: Path) -> None:
    script = tmp_path / "slow_daemon.py"
    script.write_text(SLOW_DAEMON)
    port = free_port()
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), "serve", "--port", str(port)],
            env={"SIDECAR_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/v1/health", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        answer: dict[str, object] = {}

        def slow_request() -> None:
            try:
                with urllib.request.urlopen(base + "/test/slow?seconds=2", timeout=30) as r:
                    answer["status"] = r.status
                    answer["body"] = json.loads(r.read())
            except Exception as exc:
                answer["error"] = repr(exc)

        client = threading.Thread(target=slow_request)
        client.start()
        # Wait until the request is in the handler (the access log has not seen it
        # finish yet, so give it a moment to arrive) before stopping.
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        client.join(30)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert answer.get("status") == 200, answer
    assert answer["body"] == {"slept": 2.0}
    text = log.read_text()
    assert text.index("stopping: finishing requests under way") < text.index("GET /test/slow 200")
    assert "stopped" in text and "Traceback" not in text
