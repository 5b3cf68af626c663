"""``sidecar sign`` calls the operations directly: no listening socket, ever.

The command runs in a child process against a sandbox this test serves (as a running
``serve --sandbox`` would); meanwhile its TCP sockets, and its children's (the
drafting workers), are read from ``/proc`` every few milliseconds: none may be in
LISTEN state. The signature lands in the CLI home's audit journal, once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from sidecar.audit import AuditJournal
from sidecar.sandbox import SandboxPKI

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's ``st`` column


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == _LISTEN:
                    inodes.add(fields[9])
    return inodes


def _process_tree(root: int) -> set[int]:
    """*root* and its descendants, from /proc/<pid>/stat."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # ``pid (comm) state ppid``: comm may hold spaces, so split after ")".
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass  # ended meanwhile
    return inodes


def listening_sockets(root: int) -> set[tuple[int, str]]:
    """(pid, inode) of each TCP socket in LISTEN state held by *root* or a descendant."""
    listening = _listening_inodes()
    return {
        (pid, inode)
        for pid in _process_tree(root)
        for inode in _socket_inodes(pid)
        if inode in listening
    }


def test_the_probe_sees_a_listening_socket() -> None:
    """The check below would see a server: this process's own, opened here."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        inode = os.readlink(f"/proc/self/fd/{server.fileno()}")[8:-1]
        assert (os.getpid(), inode) not in listening_sockets(os.getpid())
        server.listen()
        assert (os.getpid(), inode) in listening_sockets(os.getpid())


async def test_sign_opens_no_listening_socket(sandbox_services: SandboxPKI, tmp_path: Path) -> None:
    home = tmp_path / "home"
    # The session's sandbox, served by this process: the CLI finds it answering.
    shutil.copytree(sandbox_services.directory, home / "sandbox")
    (home / "sidecar.toml").write_text(
        f"[sandbox]\nport = {sandbox_services.port}\nsofthsm = false\n"
    )
    document = tmp_path / "note.xml"
    document.write_bytes(b"<note><line>42.00</line></note>")
    env = {**os.environ, "SIDECAR_HOME": str(home)}
    env.pop("SOFTHSM2_CONF", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "sign",
        "--sandbox",
        "--level",
        "B-LT",  # the TSA and revocation data: the CLI talks to upstreams, as a client
        str(document),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    output = asyncio.ensure_future(process.communicate())
    samples = 0
    found: set[tuple[int, str]] = set()
    while not output.done():
        found |= await asyncio.to_thread(listening_sockets, process.pid)
        samples += 1
        await asyncio.sleep(0.01)
    stdout, stderr = output.result()
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    assert "signed at B-LT" in stdout.decode()
    assert (tmp_path / "note.signed.xml").exists()
    assert samples >= 10  # it was watched while it ran (it takes seconds)
    assert found == set()
    journal = AuditJournal(home / "audit.sqlite3")
    try:
        entries = [e for e in journal.entries() if e.operation.startswith("sign.")]
        assert [(e.operation, e.level, e.client) for e in entries] == [("sign.xml", "B-LT", "cli")]
        assert journal.verify().ok
    finally:
        journal.close()
