"""SAML certificate rotation with overlap (issue #17 item 1), the service against the emulator over real HTTP:
both certificates verify sign-ins until the IdP switches, no sign-in fails across the switch, a test sign-in
after it retires the old certificate at WorkOS and resolves the renewal alert; repeats are no-ops, steps out of
order are refused, and one organization never reaches another's rotation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Cause
from hatidata_auth.idp import SamlMetadata, get_registry
from hatidata_auth.models import AuditEvent, OrganizationAlert
from hatidata_auth.services import cert_rotation, rotation_proof
from tests.rotation_support import GLOBEX_CONN, metadata_with, open_test_window, pem_and_b64, sso_code
from tests.support.dsync import mirror_organizations
from tests.support.servers import EmulatorControl

CAUSE = Cause.system("test")


def parsed(app: Flask, b64: str) -> SamlMetadata:
    result = get_registry(app).get("azure").validate_metadata_xml(metadata_with(b64), datetime.now(UTC))
    assert result.ok, result.errors
    assert isinstance(result.value, SamlMetadata)
    return result.value


@pytest.fixture
def globex(app: Flask, db_session: Any, workos_client: Any, emulator: Any) -> Any:
    """Globex mirrored, its connection trusting one old certificate (20 days left) the IdP signs with, and the
    renewal alert WorkOS raises for it open."""
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    assert org.connection_id == GLOBEX_CONN
    old_pem, _ = pem_and_b64(20, "old.globex.test")
    workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=old_pem)
    db_session.add(OrganizationAlert(organization_id=org.id, kind="saml_certificate_renewal", target_type="connection",
                                     target_id=GLOBEX_CONN, message="renew", details={}))
    db_session.commit()
    return org


def actions(db_session: Any, org_id: str) -> list[str]:
    return [a for a in db_session.scalars(select(AuditEvent.action).where(
        AuditEvent.organization_id == org_id, AuditEvent.action.like("sso.certificate_rotation.%"))
        .order_by(AuditEvent.seq))]


def test_rotation_retires_the_old_certificate_with_no_failed_sign_in(app: Flask, db_session: Any,
                                                                     workos_client: Any, emulator: Any,
                                                                     globex: Any) -> None:
    control = EmulatorControl(emulator.url)
    old_id = workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data[0].id
    new_pem, new_b64 = pem_and_b64(400, "new.globex.test")
    started = cert_rotation.start(db_session, workos_client, globex, parsed(app, new_b64), "xml", CAUSE)
    db_session.commit()
    assert (started.state, started.old_certificate_ids) == ("both_trusted", (old_id,))
    assert "code" in sso_code(emulator.url, "dev@globex.test")  # still signed with the old certificate
    control.ctl("PUT", f"/connections/{GLOBEX_CONN}/idp_signing", {"pem": new_pem})  # the IdP switches
    assert "code" in sso_code(emulator.url, "dev@globex.test")  # verified by the new one: no failure
    assert cert_rotation.mark_switched(db_session, globex, CAUSE).state == "switched"
    db_session.commit()
    open_test_window(db_session, workos_client, globex, CAUSE)
    code = sso_code(emulator.url, "dev@globex.test")["code"][0]
    done = rotation_proof.finish_test_sign_in(db_session, workos_client, globex, code, CAUSE)
    db_session.commit()
    assert (done.state, done.verified_by) == ("retired", "dev@globex.test")
    held = [c.id for c in workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data]
    assert held == [started.new_certificate_id]
    alert = db_session.scalar(select(OrganizationAlert).where(OrganizationAlert.organization_id == globex.id,
                                                              OrganizationAlert.kind == "saml_certificate_renewal"))
    assert (alert.resolved_at is not None, alert.resolution) == (True, "certificate_rotated")
    signing = control.ctl("GET", f"/connections/{GLOBEX_CONN}/idp_signing")
    counts = {c["id"]: c["verified_sign_ins"] for c in signing["certificates"]}
    assert counts == {started.new_certificate_id: 2}  # the test sign-in was verified by the new certificate
    assert actions(db_session, globex.id) == ["sso.certificate_rotation.started", "sso.certificate_rotation.switched",
                                              "sso.certificate_rotation.test_started",
                                              "sso.certificate_rotation.verified", "sso.certificate_rotation.retired"]
    # Repeats change nothing and write nothing.
    again = rotation_proof.finish_test_sign_in(db_session, workos_client, globex, code, CAUSE)
    assert again == done
    assert len(actions(db_session, globex.id)) == 5


def test_repeating_the_start_answers_the_same_rotation(app: Flask, db_session: Any, workos_client: Any,
                                                       globex: Any) -> None:
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    first = cert_rotation.start(db_session, workos_client, globex, parsed(app, new_b64), "xml", CAUSE)
    db_session.commit()
    assert cert_rotation.start(db_session, workos_client, globex, parsed(app, new_b64), "xml", CAUSE) == first
    assert len(workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == 2
    _, other_b64 = pem_and_b64(300, "other.globex.test")
    with pytest.raises(cert_rotation.RotationError) as refused:
        cert_rotation.start(db_session, workos_client, globex, parsed(app, other_b64), "xml", CAUSE)
    assert refused.value.code == "rotation_in_progress"
    assert actions(db_session, globex.id) == ["sso.certificate_rotation.started"]


def test_steps_out_of_order_and_old_metadata_are_refused(app: Flask, db_session: Any, workos_client: Any,
                                                         emulator: Any, globex: Any) -> None:
    with pytest.raises(cert_rotation.RotationError) as none:
        cert_rotation.mark_switched(db_session, globex, CAUSE)
    assert (none.value.code, none.value.status) == ("no_rotation", 404)
    old_pem = workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data[0].value
    old_b64 = "".join(old_pem.strip().splitlines()[1:-1])
    with pytest.raises(cert_rotation.RotationError) as stale:
        cert_rotation.start(db_session, workos_client, globex, parsed(app, old_b64), "xml", CAUSE)
    assert (stale.value.code, stale.value.status) == ("no_new_certificate", 422)
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    cert_rotation.start(db_session, workos_client, globex, parsed(app, new_b64), "xml", CAUSE)
    code = sso_code(emulator.url, "dev@globex.test")["code"][0]
    with pytest.raises(cert_rotation.RotationError) as early:
        rotation_proof.finish_test_sign_in(db_session, workos_client, globex, code, CAUSE)
    assert early.value.code == "rotation_not_switched"
    assert len(workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == 2


def test_a_test_sign_in_through_another_connection_retires_nothing(app: Flask, db_session: Any,
                                                                   workos_client: Any, emulator: Any,
                                                                   globex: Any) -> None:
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    cert_rotation.start(db_session, workos_client, globex, parsed(app, new_b64), "xml", CAUSE)
    cert_rotation.mark_switched(db_session, globex, CAUSE)
    db_session.commit()
    foreign = sso_code(emulator.url, "admin@acme.test", "conn_01HTDQ8C100000000000000001")["code"][0]
    with pytest.raises(cert_rotation.RotationError):
        rotation_proof.finish_test_sign_in(db_session, workos_client, globex, foreign, CAUSE)
    db_session.rollback()
    assert len(workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == 2
    assert cert_rotation.current(db_session, globex.id, GLOBEX_CONN).state == "switched"
    others = mirror_organizations(db_session, workos_client)
    assert cert_rotation.current(db_session, others["acme.test"].id, GLOBEX_CONN) is None


def test_concurrent_starts_add_one_certificate_and_one_rotation(app: Flask, db_session: Any, workos_client: Any,
                                                                globex: Any) -> None:
    import threading

    from hatidata_auth.extensions import db
    from hatidata_auth.models import CertificateRotation, Organization

    _, new_b64 = pem_and_b64(400, "new.globex.test")
    metadata = parsed(app, new_b64)
    org_id = globex.id
    db_session.remove()
    start = threading.Barrier(3)
    answers: list[Any] = []

    def run() -> None:
        with app.app_context():
            start.wait()
            org = db.session.get(Organization, org_id)
            answers.append(cert_rotation.start(db.session(), workos_client, org, metadata, "xml", CAUSE))
            db.session.commit()
            db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 3
    assert len({a.new_certificate_id for a in answers}) == 1
    assert len(db_session.scalars(select(CertificateRotation)).all()) == 1
    assert actions(db_session, org_id) == ["sso.certificate_rotation.started"]
    assert len(workos_client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data) == 2
