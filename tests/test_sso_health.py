"""Connection health on the SSO index (issue #15, item 5): state, last successful sign-in, the earliest certificate
expiry we hold, open alerts, directory state and the last directory event applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask

from hatidata_auth.causes import Cause
from hatidata_auth.models import Organization, OrganizationAlert
from hatidata_auth.services import audit, sign_in_attempts, sso_health
from tests.auth_support import ACME, GLOBEX, sync_organizations


def test_connection_health_reads_what_we_hold(app: Flask, db_session: Any) -> None:
    orgs = sync_organizations(app)
    acme = db_session.get(Organization, orgs[ACME])
    globex = db_session.get(Organization, orgs[GLOBEX])
    empty = sso_health.connection_health(db_session, acme)
    assert (empty.last_success_at, empty.certificate_not_after, empty.open_alerts, empty.last_directory_event) == (
        None, None, (), None)
    assert empty.connection_id == acme.connection_id

    at = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for org, when, kind in ((acme, at, "sign_in"), (acme, at + timedelta(hours=1), "test"),
                            (globex, at + timedelta(hours=2), "sign_in")):
        sign_in_attempts.record_callback(db_session, sign_in_attempts.Seen(
            organization_id=org.id, kind=kind, outcome="success", workos_session_id=f"s-{when}-{org.id}",
            occurred_at=when))
    expiry = datetime(2027, 1, 15, tzinfo=UTC)
    db_session.add(OrganizationAlert(organization_id=acme.id, kind="saml_certificate_renewal",
                                     target_type="connection", target_id=acme.connection_id, message="renew",
                                     details={"expiry_date": expiry.isoformat()}))
    audit.record(db_session, action="directory_user.updated", cause=Cause.from_event("event_9", reason="dsync"),
                 organization_id=acme.id, target_type="directory_user", target_id="du_1")
    audit.record(db_session, action="membership.role_changed", cause=Cause.system("x"), organization_id=acme.id,
                 target_type="membership", target_id="m_1")
    db_session.commit()

    later_metadata = expiry + timedelta(days=300)
    health = sso_health.connection_health(db_session, acme, metadata_not_after=later_metadata.replace(tzinfo=None))
    assert health.last_success_at == at  # a test sign-in is not a sign-in, another organization's is not ours
    assert health.certificate_not_after == expiry  # the earliest we hold
    assert [a.kind for a in health.open_alerts] == ["saml_certificate_renewal"]
    assert health.last_directory_event == "directory_user.updated"
    assert sso_health.connection_health(db_session, globex).open_alerts == ()
