"""Break-it round 2: cursor paging of lists the service hands over whole (``api.common.paginate_list``: API keys,
sessions, role mappings) against keyset paging (members, audit events)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, utcnow
from tests.api_support import Tenant, cursor_operations, headers_for, make_tenant


def _add_sessions(app: Flask, tenant: Tenant, count: int) -> None:
    with app.app_context():
        now = utcnow()
        db.session.add_all([
            AuthSession(organization_id=tenant.id, user_id=tenant.users["developer"],
                        workos_session_id=f"session_breakit2_{tenant.id[-6:]}_{n:04d}",
                        created_at=now - timedelta(seconds=n), expires_at=now + timedelta(hours=1))
            for n in range(count)])
        db.session.commit()
        db.session.remove()


def _all_pages(client: FlaskClient, tenant: Tenant, path: str, limit: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, query_string=query, headers=headers_for(tenant, "admin"))
        assert page.status_code == 200, page.get_data(as_text=True)
        body = page.get_json()
        seen.extend(item["id"] for item in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_paging_sessions_reaches_every_active_session(app: Flask, client: FlaskClient, emulator: Any) -> None:
    tenant = make_tenant(app, "Ostrander")
    _add_sessions(app, tenant, 520)
    seen = _all_pages(client, tenant, "/api/v1/sessions", 200)
    assert len(seen) == len(set(seen)) == 521


def test_revoking_the_last_listed_session_does_not_end_the_listing(app: Flask, client: FlaskClient,
                                                                   emulator: Any) -> None:
    from sqlalchemy import update

    tenant = make_tenant(app, "Pellucid")
    _add_sessions(app, tenant, 3)
    first = client.get("/api/v1/sessions", query_string={"limit": 1}, headers=headers_for(tenant, "admin")).get_json()
    [listed] = first["data"]
    with app.app_context():
        db.session.execute(update(AuthSession).where(AuthSession.id == listed["id"]).values(revoked_at=utcnow()))
        db.session.commit()
        db.session.remove()
    rest = client.get("/api/v1/sessions", query_string={"limit": 1, "cursor": first["next_cursor"]},
                      headers=headers_for(tenant, "admin")).get_json()
    assert [item["id"] for item in rest["data"]], "three active sessions remain, the next page is empty"


def _cursor_operations(app: Flask) -> tuple[list[str], list[str]]:
    """The paged lists of ``/api/openapi.json`` and its continuations (``api_support.cursor_operations``)."""
    return cursor_operations(app.test_client().get("/api/openapi.json").get_json())


def _walk(client: FlaskClient, tenant: Tenant, path: str, limit: int,
          cursor: str | None = None) -> tuple[list[Any], list[Any]]:
    """Every item from *cursor* on, and the key of each page's end (its decoded ``next_cursor``)."""
    from hatidata_auth.api.common import decode_cursor

    seen: list[Any] = []
    keys: list[Any] = []
    while True:
        query: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, query_string=query, headers=headers_for(tenant, "admin"))
        assert page.status_code == 200, (path, page.get_data(as_text=True))
        body = page.get_json()
        seen.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, keys
        keys.append(decode_cursor(cursor))


FIXTURE_HOLDS_ONE = {"/api/v1/webhook-inbox/failed", "/api/v1/organization/alerts"}  # make_tenant's single ones


def _refuses_tampered_cursors(client: FlaskClient, tenant: Tenant, path: str, extra: list[str]) -> None:
    from hatidata_auth.api.common import encode_cursor

    for tampered in ("not a cursor!", encode_cursor(True), encode_cursor(1.5), encode_cursor([1]), "e30", *extra):
        with client.get(path, query_string={"cursor": tampered}, headers=headers_for(tenant, "admin")) as answer:
            assert answer.status_code == 422, (path, tampered, answer.get_data(as_text=True))
            assert "cursor" in answer.get_json()["error"]["details"]["fields"]


def test_every_paged_list_pages_by_key_refuses_tampered_cursors_and_survives_a_missing_item(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    from hatidata_auth.api.common import encode_cursor
    from hatidata_auth.models import RoleMapping, SignInAttempt

    tenant = make_tenant(app, "Quillfeather")
    _add_sessions(app, tenant, 4)
    with app.app_context():
        db.session.add_all([RoleMapping(organization_id=tenant.id, identifier_kind="name", role="viewer",
                                        group_identifier=f"Quillfeather Team {n}", priority=n) for n in range(3)])
        db.session.add_all([SignInAttempt(organization_id=tenant.id, kind="sign_in", outcome="failure",
                                          reason="not_assigned_to_app", email=f"user{n}@quillfeather.test",
                                          sources="event", occurred_at=utcnow() - timedelta(minutes=n))
                            for n in range(3)])
        db.session.commit()
        db.session.remove()
    lists, continuations = _cursor_operations(app)
    assert {"/api/v1/sessions", "/api/v1/api-keys", "/api/v1/role-mappings", "/api/v1/members"} <= set(lists)
    assert {"/api/v1/audit-events/export", "/api/v1/audit-events/verify"} <= set(continuations)
    for path in lists:
        whole, _ = _walk(client, tenant, path, 100)
        ones, keys = _walk(client, tenant, path, 1)
        assert ones == whole, f"{path}: pages of one disagree with one page"
        assert len(keys) == len(whole) - 1
        assert len(whole) >= 2 or path in FIXTURE_HOLDS_ONE, f"{path}: too few items to page"
        ascending = keys == sorted(keys)
        assert ascending or keys == sorted(keys, reverse=True), f"{path}: not in key order"
        wrong_type = [encode_cursor("x" if isinstance(keys[0], int) else 1)] if keys else []
        _refuses_tampered_cursors(client, tenant, path, wrong_type)
        for index, before in enumerate(keys, start=1):
            # a key no item has, between the items index-1 and index: a cursor whose item was deleted or revoked
            if isinstance(before, str):
                missing: Any = before + "0"
            else:
                missing = before + 1 if ascending else before - 1
                if index == len(keys) or missing == keys[index]:
                    continue
            assert _walk(client, tenant, path, 1, encode_cursor(missing))[0] == whole[index:], (path, missing)


def test_every_continuation_refuses_tampered_cursors(app: Flask, client: FlaskClient, emulator: Any) -> None:
    """A continuation's cursor (a stream's next part, not a list's page) is refused by the same decoding rule;
    its walk is tested by its own rule (``test_audit_export_jobs``: the export's trailer cursor continues it)."""
    tenant = make_tenant(app, "Quillstream")
    _, continuations = _cursor_operations(app)
    assert continuations
    for path in continuations:
        _refuses_tampered_cursors(client, tenant, path, [])
