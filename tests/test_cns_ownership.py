"""Each CNS message belongs to the client that deposited it (API.md): two real
``forward`` clients cannot read, list or cancel each other's messages; an ``admin``
client sees and cancels all. And the outbox of an older version takes owners on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sidecar.clients import Scope
from sidecar.cns.outbox import Outbox
from tests.fixtures.cns import FeeNotes, wait_status
from tests.fixtures.daemon import Api


def as_client(api: Api, name: str, *scopes: Scope) -> dict[str, str]:
    token = api.store.create(name, frozenset(scopes))
    return {"Authorization": f"Bearer {token}"}


async def call(api: Api, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
    response = await api.client.request(method, url, headers=headers, **kw)
    body = await response.json(content_type=None)
    return response.status, body


async def listed(api: Api, headers: dict[str, str]) -> set[str]:
    status, body = await call(api, "GET", "/v1/cns/messages?limit=1000", headers)
    assert status == 200, body
    return {m["uuid"] for m in body["messages"]}


async def test_two_forward_clients_are_isolated_and_admin_sees_all(
    cns_api: Api, fee_notes: FeeNotes
) -> None:
    alice = as_client(cns_api, "alice", Scope.FORWARD)
    bob = as_client(cns_api, "bob", Scope.FORWARD)
    ops = as_client(cns_api, "ops", Scope.FORWARD, Scope.ADMIN)
    xml = {"Content-Type": "application/xml"}
    note_a, body_a = fee_notes.make()
    note_b, body_b = fee_notes.make()
    assert (await call(cns_api, "POST", "/v1/cns/fee-notes", alice | xml, data=body_a))[0] == 202
    assert (await call(cns_api, "POST", "/v1/cns/fee-notes", bob | xml, data=body_b))[0] == 202

    # Read: one's own, never the other's (404, as if it did not exist).
    assert (await call(cns_api, "GET", f"/v1/cns/messages/{note_a}", alice))[0] == 200
    status, problem = await call(cns_api, "GET", f"/v1/cns/messages/{note_a}", bob)
    assert (status, problem["code"]) == (404, "not_found")
    assert (await call(cns_api, "GET", f"/v1/cns/messages/{note_b}", alice))[0] == 404
    # List: filtered, also with a status filter and through the paging cursor.
    assert await listed(cns_api, alice) == {note_a}
    assert await listed(cns_api, bob) == {note_b}
    status, page = await call(cns_api, "GET", "/v1/cns/messages?limit=1", bob)
    assert [m["uuid"] for m in page["messages"]] == [note_b]
    # Posting another client's UUID, even with the same content, is not answered with
    # that client's message.
    status, problem = await call(cns_api, "POST", "/v1/cns/fee-notes", bob | xml, data=body_a)
    assert (status, problem["code"]) == (409, "duplicate_uuid")

    # Cancel: bob cannot cancel alice's note; alice can.
    status, problem = await call(cns_api, "DELETE", f"/v1/cns/fee-notes/{note_a}", bob)
    assert (status, problem["code"]) == (404, "not_found")
    await wait_status(cns_api, note_a, {"delivered"})
    status, cancel_a = await call(cns_api, "DELETE", f"/v1/cns/fee-notes/{note_a}", alice)
    assert status == 202
    assert await listed(cns_api, alice) == {note_a, cancel_a["uuid"]}
    assert await listed(cns_api, bob) == {note_b}
    assert (await call(cns_api, "GET", f"/v1/cns/messages/{cancel_a['uuid']}", bob))[0] == 404

    # Admin: sees all, and may cancel anyone's; the cancellation is the note owner's.
    assert await listed(cns_api, ops) >= {note_a, note_b, cancel_a["uuid"]}
    assert (await call(cns_api, "GET", f"/v1/cns/messages/{note_b}", ops))[0] == 200
    await wait_status(cns_api, note_b, {"delivered"})
    status, cancel_b = await call(cns_api, "DELETE", f"/v1/cns/fee-notes/{note_b}", ops)
    assert status == 202
    status, seen = await call(cns_api, "GET", f"/v1/cns/messages/{cancel_b['uuid']}", bob)
    assert status == 200 and seen["client"] == "bob"
    assert cancel_b["uuid"] not in await listed(cns_api, alice)


def test_an_older_outbox_gets_owners_and_keeps_its_rows(tmp_path: Path) -> None:
    """Version 0 (before owners): the rows stay, each deposit keeps its client as owner,
    and a cancellation another client made is given to its fee note's owner."""
    path = tmp_path / "outbox.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            operation TEXT NOT NULL, subject TEXT NOT NULL, client TEXT NOT NULL,
            digest TEXT NOT NULL, level TEXT NOT NULL DEFAULT '', body BLOB,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
            delivered_at REAL, last_error TEXT NOT NULL DEFAULT '', answer_status INTEGER,
            answer_type TEXT NOT NULL DEFAULT '', answer_body BLOB,
            reasons TEXT NOT NULL DEFAULT '[]');
        INSERT INTO messages (id, operation, subject, client, digest, status, created_at,
            updated_at, next_attempt_at)
        VALUES ('n1', 'deposit', 'n1', 'alice', 'd', 'delivered', 1, 1, 1),
               ('c1', 'cancel', 'n1', 'bob', '', 'queued', 2, 2, 2);
        """
    )
    old.commit()
    old.close()
    outbox = Outbox(path)
    try:
        assert {m.id: m.client for m in outbox.list()} == {"n1": "alice", "c1": "alice"}
        assert [m.id for m in outbox.list(owner="bob")] == []
        assert outbox.get("c1", owner="alice") is not None
        assert outbox._db.execute("PRAGMA user_version").fetchone() == (3,)
        assert len(outbox.store_id) == 32
    finally:
        outbox.close()
