"""The admin REST API: uniform errors, cursor pagination, permissions, and each resource's behaviour."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership, Organization
from tests.api_support import Tenant, headers_for, make_tenant, sso_verified
from tests.auth_support import csrf_headers, login, sync_organizations


@pytest.fixture
def acme(app: Flask) -> Tenant:
    return make_tenant(app, "Acme")


def _admin(tenant: Tenant) -> dict[str, str]:
    return headers_for(tenant, "admin")


def _audited(app: Flask, org_id: str, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org_id,
                                                                AuditEvent.action == action)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def test_openapi_document_and_docs_page(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/audit-events" in document["paths"]
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert b"/api/docs/assets/swagger-ui-bundle.js" in page.data
    assert b"cdn" not in page.data.lower()
    assert client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/docs/init.js").status_code == 200
    assert client.get("/api/docs/assets/../../secret").status_code == 404


def test_validation_errors_name_the_field(client: FlaskClient, acme: Tenant) -> None:
    response = client.patch("/api/v1/organization/settings", headers=_admin(acme),
                            json={"default_role": "owner", "session_policy": {"active_ttl": 5}})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]["fields"]) == {"default_role", "session_policy"}
    assert error["details"]["location"] == "json"
    query = client.get("/api/v1/members?limit=0&role=boss", headers=_admin(acme)).get_json()["error"]
    assert set(query["details"]["fields"]) == {"limit", "role"}
    assert query["details"]["location"] == "query"
    bad_cursor = client.get("/api/v1/members?cursor=%%%", headers=_admin(acme)).get_json()["error"]
    assert bad_cursor["details"]["fields"] == {"cursor": ["Not a valid cursor."]}


def test_errors_have_one_shape(client: FlaskClient, acme: Tenant) -> None:
    for response in (client.get("/api/v1/members"), client.get("/api/v1/nowhere", headers=_admin(acme)),
                     client.delete("/api/v1/audit-events", headers=_admin(acme)),
                     client.get("/api/v1/members", headers=headers_for(acme, "viewer")),
                     client.get("/api/v1/members/mem_missing", headers=_admin(acme))):
        body = response.get_json()
        assert response.status_code in (401, 403, 404, 405)
        assert set(body) == {"error"}
        assert {"code", "message", "details"} <= set(body["error"])
        assert body["error"]["request_id"] == response.headers["X-Request-ID"]


def test_settings_are_read_and_changed_with_an_audit_event(app: Flask, client: FlaskClient, acme: Tenant) -> None:
    current = client.get("/api/v1/organization/settings", headers=headers_for(acme, "viewer")).get_json()
    assert current["organization_id"] == acme.id
    assert current["default_role"] == "viewer"
    forbidden = client.patch("/api/v1/organization/settings", headers=headers_for(acme, "developer"),
                             json={"sso_enforced": True})
    assert forbidden.status_code == 403
    sso_verified(app, acme)  # safe enforcement: an admin signed in through SSO recently
    changed = client.patch("/api/v1/organization/settings", headers=_admin(acme), json={
        "sso_enforced": True, "session_cache_ttl": 60, "session_policy": {"active_ttl": 3600},
        "default_role": None})
    assert changed.status_code == 200, changed.get_json()
    body = changed.get_json()
    assert body["sso_enforced"] is True
    assert body["session_cache_ttl"] == 60
    assert body["default_role"] is None
    assert body["session_policy"] == {"active_ttl": 3600, "remembered_ttl": None}
    [event] = _audited(app, acme.id, "organization.settings_updated")
    assert event.details["changes"]["sso_enforced"] == {"from": False, "to": True}
    assert event.actor_type == "api_key"
    assert event.request_id
    assert _audited(app, acme.id, "role_mapping.replaced")  # the default role went through the mapping service


def test_members_list_filter_paginate_change_and_remove(app: Flask, client: FlaskClient, acme: Tenant) -> None:
    first = client.get("/api/v1/members?limit=2", headers=_admin(acme)).get_json()
    assert len(first["data"]) == 2
    assert first["next_cursor"]
    seen = [m["id"] for m in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/api/v1/members?limit=2&cursor={cursor}", headers=_admin(acme)).get_json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    viewers = client.get("/api/v1/members?role=viewer", headers=_admin(acme)).get_json()["data"]
    assert {m["email"] for m in viewers} == {"viewer@acme.test", "victim@acme.test"}
    by_email = client.get("/api/v1/members?email=SYNCED", headers=_admin(acme)).get_json()["data"]
    assert [m["managed_by_directory"] for m in by_email] == [True]

    member = acme.ids["member"]
    changed = client.patch(f"/api/v1/members/{member}", headers=_admin(acme), json={"role": "developer"})
    assert changed.status_code == 200
    assert changed.get_json()["role"] == "developer"
    assert changed.get_json()["role_source"] == "manual"
    managed = client.patch(f"/api/v1/members/{acme.ids['directory_member']}", headers=_admin(acme),
                           json={"role": "admin"})
    assert managed.status_code == 409
    assert managed.get_json()["error"]["code"] == "managed_by_directory"
    removed = client.delete(f"/api/v1/members/{member}", headers=_admin(acme))
    assert removed.status_code == 200
    assert removed.get_json()["status"] == "deprovisioned"
    assert _audited(app, acme.id, "membership.deprovisioned")
    with app.app_context():
        membership = db.session.get(Membership, member)
        assert membership is not None
        assert membership.status == "deprovisioned"
        db.session.remove()
    explained = client.get(f"/api/v1/members/{acme.members['viewer']}/role-explanation",
                           headers=_admin(acme)).get_json()
    assert explained["role"] == "viewer"
    assert "manual" in explained["note"]


def test_role_mappings_crud_preview_and_explain(app: Flask, client: FlaskClient, acme: Tenant) -> None:
    listed = client.get("/api/v1/role-mappings", headers=_admin(acme)).get_json()["data"]
    assert [m["group_identifier"] for m in listed] == ["Acme Admins"]
    created = client.post("/api/v1/role-mappings", headers=_admin(acme),
                          json={"identifier_kind": "name", "group_identifier": "Engineers", "role": "developer"})
    assert created.status_code == 201, created.get_json()
    mapping = created.get_json()["mapping"]
    assert mapping["role"] == "developer"
    assert mapping["id"]
    assert client.get("/api/v1/role-mappings", headers=headers_for(acme, "developer")).status_code == 403
    patched = client.patch(f"/api/v1/role-mappings/{mapping['id']}", headers=_admin(acme), json={"priority": 5})
    assert patched.status_code == 200
    assert patched.get_json()["mapping"]["priority"] == 5
    new_id = patched.get_json()["mapping"]["id"]
    assert new_id == mapping["id"], "an edited mapping keeps its id"
    assert client.get(f"/api/v1/role-mappings/{new_id}", headers=_admin(acme)).get_json()["priority"] == 5
    preview = client.post("/api/v1/role-mappings/preview", headers=_admin(acme),
                          json={"mappings": [], "default_role": "viewer"})
    assert preview.status_code == 200
    assert "role_changes" in preview.get_json()
    duplicate = client.post("/api/v1/role-mappings/preview", headers=_admin(acme), json={"mappings": [
        {"identifier_kind": "name", "group_identifier": "X", "role": "admin"},
        {"identifier_kind": "name", "group_identifier": "X", "role": "viewer"}]})
    assert duplicate.status_code == 422
    assert "mappings" in duplicate.get_json()["error"]["details"]["fields"]
    deleted = client.delete(f"/api/v1/role-mappings/{new_id}", headers=_admin(acme))
    assert deleted.status_code == 200
    assert client.get(f"/api/v1/role-mappings/{new_id}", headers=_admin(acme)).status_code == 404
    assert len(_audited(app, acme.id, "role_mapping.replaced")) == 3


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u3000"])
def test_a_blank_group_identifier_is_refused_by_name(client: FlaskClient, acme: Tenant, blank: str) -> None:
    """A blank group (only spaces) is a 422 ``validation_error`` naming the field you sent, for one mapping and in a
    whole set (it was ``invalid_role_mapping`` naming a position in the stored set: "#500: group_identifier ...")."""
    one = {"identifier_kind": "name", "group_identifier": blank, "role": "viewer"}
    for method, body, where in (("POST", one, lambda f: f["group_identifier"]),
                                ("PUT", {"mappings": [one]}, lambda f: f["mappings"]["0"]["group_identifier"]),
                                ("POST", {"mappings": [one]}, lambda f: f["mappings"]["0"]["group_identifier"])):
        path = "/api/v1/role-mappings" + ("/preview" if method == "POST" and "mappings" in body else "")
        response = client.open(path, method=method, json=body, headers=_admin(acme))
        error = response.get_json()["error"]
        assert (response.status_code, error["code"]) == (422, "validation_error"), (path, error)
        assert where(error["details"]["fields"]), error


def test_an_edit_of_a_mapping_that_changes_nothing_is_refused(app: Flask, client: FlaskClient, acme: Tenant) -> None:
    mapping = client.get("/api/v1/role-mappings", headers=_admin(acme)).get_json()["data"][0]
    audited = len(_audited(app, acme.id, "role_mapping.replaced"))
    response = client.patch(f"/api/v1/role-mappings/{mapping['id']}", json={}, headers=_admin(acme))
    assert (response.status_code, response.get_json()["error"]["code"]) == (422, "validation_error")
    assert len(_audited(app, acme.id, "role_mapping.replaced")) == audited


def test_a_mapping_change_audits_the_set_as_stored_with_every_id(app: Flask, client: FlaskClient,
                                                                 acme: Tenant) -> None:
    """The audit event's ``after`` is the set as stored: an added mapping's id too (it was ``null``, the spec as
    sent), for every write (a whole set with a new and a kept mapping, one added, one changed)."""
    writes = [("PUT", "/api/v1/role-mappings", {"mappings": [
                  {"identifier_kind": "name", "group_identifier": "Acme Admins", "role": "admin"},
                  {"identifier_kind": "name", "group_identifier": "Audited Engineers", "role": "developer"}]}),
              ("POST", "/api/v1/role-mappings",
               {"identifier_kind": "name", "group_identifier": "Audited Viewers", "role": "viewer"}),
              ("PATCH", "/api/v1/organization/settings", {"default_role": "viewer"})]
    for method, path, body in writes:
        assert client.open(path, method=method, headers=_admin(acme), json=body).status_code in (200, 201)
        stored = client.get("/api/v1/role-mappings", headers=_admin(acme)).get_json()["data"]
        latest = max(_audited(app, acme.id, "role_mapping.replaced"), key=lambda event: event.seq)
        after = latest.details["after"]
        assert all(m["id"] for m in after), after
        assert sorted((m["id"], m["group_identifier"], m["role"]) for m in after) == \
            sorted((m["id"], m["group_identifier"], m["role"]) for m in stored)


def test_audit_events_filter_paginate_verify_and_export(app: Flask, client: FlaskClient, acme: Tenant) -> None:
    sso_verified(app, acme)
    client.patch("/api/v1/organization/settings", headers=_admin(acme), json={"sso_enforced": True})
    everything = client.get("/api/v1/audit-events?limit=200", headers=_admin(acme)).get_json()["data"]
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs, reverse=True)
    paged: list[int] = []
    cursor = None
    while True:
        url = "/api/v1/audit-events?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=_admin(acme)).get_json()
        paged += [e["seq"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert paged == seqs
    [change] = client.get("/api/v1/audit-events?action=organization.settings_updated&outcome=success"
                          "&actor_type=api_key", headers=_admin(acme)).get_json()["data"]
    assert change["target"] == {"type": "organization", "id": acme.id}
    assert change["actor"]["type"] == "api_key"
    by_target = client.get(f"/api/v1/audit-events?target_id={acme.id}", headers=_admin(acme)).get_json()["data"]
    assert {e["action"] for e in by_target} >= {"organization.settings_updated", "test.seeded"}
    future = client.get("/api/v1/audit-events?since=2999-01-01T00:00:00Z", headers=_admin(acme)).get_json()
    assert future["data"] == []
    one = client.get(f"/api/v1/audit-events/{change['id']}", headers=_admin(acme)).get_json()
    assert one == change
    assert client.get("/api/v1/audit-events/verify", headers=_admin(acme)).get_json()["ok"] is True
    assert client.get("/api/v1/audit-events", headers=headers_for(acme, "developer")).status_code == 403

    ndjson = client.get("/api/v1/audit-events/export", headers=_admin(acme))
    assert ndjson.status_code == 200
    assert ndjson.mimetype == "application/x-ndjson"
    assert ndjson.is_streamed
    lines = [json.loads(line) for line in ndjson.get_data(as_text=True).splitlines()]
    *events, trailer = lines
    assert [e["seq"] for e in events] == sorted(seqs)
    assert trailer == {"type": "trailer", "count": len(events), "final_hash": events[-1]["hash"], "complete": True,
                       "next_cursor": None, "checkpoint": None}
    csv_answer = client.get("/api/v1/audit-events/export?format=csv&since=2000-01-01T00:00:00Z",
                            headers=_admin(acme))
    assert csv_answer.mimetype == "text/csv"
    assert csv_answer.get_data(as_text=True).splitlines()[0].startswith("id,organization_id,seq,")


def test_sso_status_and_failed_inbox(app: Flask, client: FlaskClient, acme: Tenant) -> None:
    status = client.get("/api/v1/organization/sso", headers=_admin(acme)).get_json()
    assert status["connection"]["id"] == "conn_acme"
    assert status["directory"]["id"] == "directory_acme"
    failed = client.get("/api/v1/webhook-inbox/failed", headers=_admin(acme)).get_json()["data"]
    assert [e["event_id"] for e in failed] == [acme.ids["inbox_event"]]
    replayed = client.post(f"/api/v1/webhook-inbox/{acme.ids['inbox_event']}/replay", headers=_admin(acme))
    assert replayed.status_code == 200, replayed.get_json()
    assert _audited(app, acme.id, "webhook_event.replayed")
    resync = client.post("/api/v1/organization/directory/resync", headers=_admin(acme))
    assert resync.status_code == 409
    assert resync.get_json()["error"]["code"] == "directory_not_found"


def test_session_cookie_callers_use_the_same_api(app: Flask, client: FlaskClient) -> None:
    """Issue #3's dashboard session works too (cookie + CSRF token for changes)."""
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    assert me["auth_type"] == "session"
    with app.app_context():
        org = db.session.get(Organization, me["organization_id"])
        assert org is not None
        db.session.remove()
    assert me["role"] == "admin", "the demo admin signs in as an admin"
    refused = client.patch("/api/v1/organization/settings", json={"sso_enforced": True})
    assert refused.status_code == 400  # no CSRF token
    changed = client.patch("/api/v1/organization/settings", json={"session_cache_ttl": 30},
                           headers=csrf_headers(client))
    assert changed.status_code == 200
    assert changed.get_json()["session_cache_ttl"] == 30
    assert [m["email"] for m in client.get("/api/v1/members").get_json()["data"]] == ["admin@acme.test"]



def test_nul_characters_are_refused_naming_the_field(client: FlaskClient, acme: Tenant) -> None:
    body = client.post("/api/v1/role-mappings", headers=_admin(acme),
                       json={"identifier_kind": "name", "group_identifier": "a\x00b", "role": "admin"})
    assert body.status_code == 422
    assert body.get_json()["error"]["details"]["fields"] == {"group_identifier": ["Must not contain NUL characters."]}
    query = client.get("/api/v1/audit-events?action=a%00b", headers=_admin(acme))
    assert query.status_code == 422
    assert query.get_json()["error"]["details"]["location"] == "query"
