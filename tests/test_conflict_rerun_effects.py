"""A write view that lost a lock conflict runs again only when nothing of its attempt outlived the rollback
(``hatidata_auth.lasting_effects``): one that committed a first step or sent WorkOS a write answers 503 instead of
doing it twice.

Found by a break-it review of the rerun: a certificate rotation's start added the certificate at WorkOS, then its
rerun found it trusted and recorded that the rotation had not added it (a cancel would have left it trusted); the
wizard's metadata step created a second connection; a resync and a replay audited twice. The rule is checked on a
bare route for each kind of effect, and on those four routes with a conflict at their first commit after an
effect (as PostgreSQL's driver raises it), with the admin's retry after the 503: the certificate the rolled-back
start had added is removed again and the connection the wizard had created is deleted again
(``unit_of_work.undo_unless_committed``): the retry does the step once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import psycopg.errors
import pytest
from flask import Flask, g, has_request_context, request
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from hatidata_auth import lasting_effects
from hatidata_auth.conflict_reruns import rerun_on_conflict
from hatidata_auth.extensions import db
from hatidata_auth.idp.testing import saml_metadata
from hatidata_auth.models import AuditEvent, WebhookEvent
from tests.api_support import headers_for, make_tenant
from tests.auth_support import INITECH, csrf_headers, login, sync_organizations
from tests.rotation_support import GLOBEX_CONN, metadata_with, pem_and_b64, signed_in_globex_admin
from tests.sso_wizard_support import Wizard
from tests.test_sso_wizard import _first_steps


def _deadlock() -> OperationalError:
    return OperationalError("COMMIT", {}, psycopg.errors.DeadlockDetected("the database broke a conflict"))


@pytest.fixture
def bare(app: Flask) -> tuple[FlaskClient, list[bytes], list[Callable[[], None]]]:
    """A write route that runs the step it is given (once), then loses a conflict on its first attempt; what it
    read from its upload on each attempt."""
    attempts: list[bytes] = []
    steps: list[Callable[[], None]] = []

    def view() -> Any:
        attempts.append(request.files["upload"].read() if "upload" in request.files else b"")
        if len(attempts) == 1:
            for step in steps:
                step()
            raise _deadlock()
        return {"ok": True}

    rerun = rerun_on_conflict(view)
    app.extensions["csrf"].exempt(rerun)  # a bare route: no browser session to forge
    app.add_url_rule("/test-only/effects", "test_only_effects", rerun, methods=["POST"])
    return app.test_client(), attempts, steps


def _commit() -> None:
    db.session.commit()


def _workos_get() -> None:
    from flask import current_app

    current_app.extensions["hatidata_workos"].client.organizations.list_organizations(limit=1)


def _workos_write() -> None:
    from flask import current_app

    current_app.extensions["hatidata_workos"].client.organizations.create_organization(name="Rerun Effects Ltd")


@pytest.mark.parametrize(("step", "lasting"), [
    (None, ()), (_workos_get, ()), (_commit, ("committed",)), (_workos_write, ("called WorkOS",)),
])
def test_a_view_runs_again_only_when_nothing_of_its_attempt_lasted(
        bare: Any, emulator: Any, caplog: pytest.LogCaptureFixture, step: Callable[[], None] | None,
        lasting: tuple[str, ...]) -> None:
    client, attempts, steps = bare
    if step is not None:
        steps.append(step)
    with caplog.at_level(logging.WARNING, "hatidata_auth.services.db_conflicts"):
        answer = client.post("/test-only/effects", data={"upload": (BytesIO(b"<metadata/>"), "m.xml")},
                             content_type="multipart/form-data")
    if lasting:
        assert (answer.status_code, len(attempts)) == (503, 1)
        assert any(f"not run again: it {lasting[0]} first" in r.getMessage() for r in caplog.records)
    else:
        assert (answer.status_code, answer.get_json()) == (200, {"ok": True})
        assert attempts == [b"<metadata/>", b"<metadata/>"], "the upload is read whole on each attempt"


def test_effects_are_counted_per_context(app: Flask, emulator: Any) -> None:
    start = lasting_effects.mark()
    lasting_effects.note_outside_write("GET")
    assert lasting_effects.since(start) == ()
    with app.app_context():
        _workos_write()
        db.session.commit()
        db.session.remove()
    assert lasting_effects.since(start) == ("committed", "called WorkOS")
    import contextvars

    assert contextvars.Context().run(lasting_effects.since, lasting_effects.Mark(0, 0)) == ()


@pytest.fixture
def conflict_after_an_effect(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Once armed (append ``"armed"``), the first commit a rerun view attempts after a commit or a WorkOS write of
    its own raises the deadlock error PostgreSQL's driver raises; then the list names the path it hit."""
    state: list[str] = []
    mark = lasting_effects.mark

    def marked() -> lasting_effects.Mark:  # where the view starts (after the sign-in checks' own commits)
        g.effects_mark = mark()
        return g.effects_mark

    def before_commit(session: Session) -> None:
        if (state == ["armed"] and has_request_context() and "effects_mark" in g
                and lasting_effects.since(g.effects_mark)):
            state.append(request.path)
            raise _deadlock()

    monkeypatch.setattr(lasting_effects, "mark", marked)
    event.listen(Session, "before_commit", before_commit)
    yield state
    event.remove(Session, "before_commit", before_commit)


def _count(app: Flask, query: Any) -> int:
    with app.app_context():
        found = int(db.session.scalar(query) or 0)
        db.session.remove()
    return found


def _audits(app: Flask, action: str) -> int:
    return _count(app, select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


def test_a_rotation_that_added_a_certificate_is_not_run_again(app: Flask, client: FlaskClient, emulator: Any,
                                                              conflict_after_an_effect: list[str]) -> None:
    admin = signed_in_globex_admin(app, client)
    sso = app.extensions["hatidata_workos"].client.sso
    held = len(sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data)  # type: ignore[attr-defined]
    _, new_b64 = pem_and_b64(400, "rerun.globex.test")
    conflict_after_an_effect.append("armed")
    answer = admin.post("/api/v1/organization/sso/certificate-rotation",
                        json={"metadata_xml": metadata_with(new_b64).decode()}, headers=csrf_headers(admin))
    assert conflict_after_an_effect[1:] == ["/api/v1/organization/sso/certificate-rotation"]
    assert answer.status_code == 503, answer.get_json()
    # Its row rolled back, the certificate it added is removed again: a retry adds it, and a cancel removes it.
    assert len(sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == held  # type: ignore[attr-defined]
    assert _audits(app, "sso.certificate_rotation.started") == 0
    again = admin.post("/api/v1/organization/sso/certificate-rotation",
                       json={"metadata_xml": metadata_with(new_b64).decode()}, headers=csrf_headers(admin))
    assert again.status_code == 201, again.get_json()
    assert len(sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == held + 1  # type: ignore[attr-defined]
    assert admin.delete("/api/v1/organization/sso/certificate-rotation", headers=csrf_headers(admin)).status_code \
        == 204
    assert len(sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == held  # type: ignore[attr-defined]


def test_a_wizard_step_that_created_a_connection_is_not_run_again(app: Flask, client: FlaskClient,
                                                                  conflict_after_an_effect: list[str]) -> None:
    orgs = sync_organizations(app)
    assert login(client, "admin@initech.test").status_code == 302
    wizard = Wizard(client, "google")
    _first_steps(wizard)
    sso = app.extensions["hatidata_workos"].client.sso
    for connection in sso.list_connections(organization_id=_workos_id(app, orgs[INITECH])).data:
        sso.delete_connection(connection.id)  # the step creates the connection (as for a first setup)
    entity = "https://accounts.google.com/o/saml2?idpid=C07654321"
    conflict_after_an_effect.append("armed")
    answer = wizard.post("metadata", {"source": "xml"},
                         file=saml_metadata(entity, "https://accounts.google.com/o/saml2/idp?idpid=C07654321"))
    assert conflict_after_an_effect[1:] == ["/admin/sso/google/wizard/metadata"]
    assert answer.status_code == 503
    # The connection only the rolled-back rows named is deleted again: the retry's is the organization's only one.
    assert [c.id for c in sso.list_connections(organization_id=_workos_id(app, orgs[INITECH])).data] == []
    retried = wizard.post("metadata", {"source": "xml"},
                          file=saml_metadata(entity, "https://accounts.google.com/o/saml2/idp?idpid=C07654321"))
    assert retried.status_code == 302
    assert len(sso.list_connections(organization_id=_workos_id(app, orgs[INITECH])).data) == 1


def _workos_id(app: Flask, org_id: str) -> str:
    from hatidata_auth.models import Organization

    with app.app_context():
        org = db.session.get(Organization, org_id)
        assert org is not None
        assert org.workos_organization_id
        found = org.workos_organization_id
        db.session.remove()
    return found


def test_a_resync_that_audited_its_request_is_not_run_again(app: Flask, client: FlaskClient,
                                                            conflict_after_an_effect: list[str]) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    conflict_after_an_effect.append("armed")
    answer = client.post("/api/v1/organization/directory/resync", headers=csrf_headers(client))
    assert conflict_after_an_effect[1:] == ["/api/v1/organization/directory/resync"]
    assert answer.status_code == 503, answer.get_json()
    assert _audits(app, "directory.resync_requested") == 1


def test_a_replay_that_stored_its_event_is_not_run_again(app: Flask, client: FlaskClient,
                                                         conflict_after_an_effect: list[str]) -> None:
    tenant = make_tenant(app, "Replayed")
    conflict_after_an_effect.append("armed")
    answer = client.post(f"/api/v1/webhook-inbox/{tenant.ids['inbox_event']}/replay",
                         headers=headers_for(tenant, "admin"))
    assert conflict_after_an_effect[1:] == [f"/api/v1/webhook-inbox/{tenant.ids['inbox_event']}/replay"]
    assert answer.status_code == 503, answer.get_json()
    # The replay's audit event commits with the outcome it records (it was left to the view's commit, which the
    # conflict rolled back: a replay applied and never audited).
    assert _audits(app, "webhook_event.replayed") == 1
    assert _count(app, select(func.count()).select_from(WebhookEvent)
                  .where(WebhookEvent.event_id == tenant.ids["inbox_event"])) == 1


def test_a_replay_that_loses_its_one_commit_runs_again_and_is_audited_once(app: Flask, client: FlaskClient,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's outcome and its audit event are one transaction: a conflict at its commit rolls back both, so
    nothing outlived the attempt and the view runs again: applied once, audited once, answered 200."""
    tenant = make_tenant(app, "ReplayedOnce")
    path = f"/api/v1/webhook-inbox/{tenant.ids['inbox_event']}/replay"
    hits: list[int] = []
    mark = lasting_effects.mark

    def marked() -> lasting_effects.Mark:  # where the view starts (after the sign-in checks' own commits)
        g.effects_mark = mark()
        return g.effects_mark

    def before_commit(session: Session) -> None:  # the view's first commit: the replay's
        if has_request_context() and request.path == path and "effects_mark" in g and not hits:
            hits.append(1)
            raise _deadlock()

    monkeypatch.setattr(lasting_effects, "mark", marked)
    event.listen(Session, "before_commit", before_commit)
    try:
        answer = client.post(path, headers=headers_for(tenant, "admin"))
    finally:
        event.remove(Session, "before_commit", before_commit)
    assert hits == [1]
    assert answer.status_code == 200, answer.get_json()
    assert _audits(app, "webhook_event.replayed") == 1
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == tenant.ids["inbox_event"]))
        assert row is not None
        assert (row.status, row.attempts) == (answer.get_json()["status"], 2), "one attempt more than the stored one"
        db.session.remove()
