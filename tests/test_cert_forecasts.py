"""Certificate expiry forecasts (issue #17 item 1) with an injected clock: one alert per held certificate,
opened at 90 days, moved on at 30 and 7, never repeated within a threshold, resolved when the certificate is
retired; the ``sso forecast-certificates`` command runs them for every organization with a connection."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Cause
from hatidata_auth.models import AuditEvent, OrganizationAlert, utcnow
from hatidata_auth.services import cert_forecasts
from tests.rotation_support import GLOBEX_CONN, pem_and_b64
from tests.support.dsync import mirror_organizations

CAUSE = Cause.system("test")


@pytest.mark.parametrize(("days_left", "expected"), [(400, None), (91, None), (90, 90), (31, 90), (30, 30),
                                                     (8, 30), (7, 7), (1, 7), (0, 0), (-3, 0)])
def test_threshold(days_left: int, expected: int | None) -> None:
    from hatidata_auth.models import utcnow

    now = utcnow()
    assert cert_forecasts.threshold(now + timedelta(days=days_left), now) == expected
    assert cert_forecasts.threshold(None, now) is None


def expiry_alerts(db_session: Any, org_id: str) -> list[tuple[str | None, int, bool]]:
    rows = db_session.scalars(select(OrganizationAlert).where(OrganizationAlert.organization_id == org_id,
                                                              OrganizationAlert.kind == "saml_certificate_expiry"))
    return sorted((r.target_id, r.details["threshold_days"], r.resolved_at is None) for r in rows)


def test_alerts_at_90_30_and_7_days_once_each_then_resolved(app: Flask, db_session: Any,
                                                            workos_client: Any) -> None:
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    pem, _ = pem_and_b64(100, "old.globex.test")
    cert = workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=pem)
    expires = cert.not_after
    assert expires is not None

    def run(days_before: float) -> cert_forecasts.ForecastRun:
        done = cert_forecasts.forecast(db_session, workos_client, org, CAUSE, expires - timedelta(days=days_before))
        db_session.commit()
        return done

    assert run(95).raised == ()
    assert expiry_alerts(db_session, org.id) == []
    assert run(89).raised == (cert.id,)
    assert run(60).raised == ()  # same threshold: nothing repeated
    assert expiry_alerts(db_session, org.id) == [(cert.id, 90, True)]
    assert run(29).raised == (cert.id,)
    assert run(6).raised == (cert.id,)
    assert run(5).raised == ()
    assert expiry_alerts(db_session, org.id) == [(cert.id, 7, True)]
    opened = db_session.scalars(select(AuditEvent.action).where(
        AuditEvent.organization_id == org.id, AuditEvent.action.like("organization_alert.%"))).all()
    assert opened == ["organization_alert.opened", "organization_alert.updated", "organization_alert.updated"]
    # Replaced: a new certificate held, the old one removed at WorkOS: its forecast is resolved.
    new_pem, _ = pem_and_b64(400, "new.globex.test")
    workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=new_pem)
    workos_client.sso.delete_connection_saml_idp_signing_cert(GLOBEX_CONN, cert.id)
    assert run(4).resolved == (cert.id,)
    assert expiry_alerts(db_session, org.id) == [(cert.id, 7, False)]
    assert run(3) == cert_forecasts.ForecastRun(org.id, (), ())


def test_the_command_forecasts_every_connected_organization(app: Flask, db_session: Any,
                                                            workos_client: Any) -> None:
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    db_session.commit()
    pem, _ = pem_and_b64(20, "old.globex.test")
    cert = workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=pem)
    result = app.test_cli_runner().invoke(args=["hatidata", "sso", "forecast-certificates"])
    assert result.exit_code == 0, result.output
    assert "1 forecast(s) raised" in result.output
    db_session.expire_all()
    assert expiry_alerts(db_session, org.id) == [(cert.id, 30, True)]
    again = app.test_cli_runner().invoke(args=["hatidata", "sso", "forecast-certificates"])
    assert "0 forecast(s) raised" in again.output


UNREADABLE = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"  # base64 DER, not a certificate


def hold_unreadable(emulator: Any, connection_id: str, days: int) -> str:
    """Make WorkOS hold a certificate `cryptography` cannot parse (WorkOS accepts some it refuses), expiring in
    *days*; its id."""
    from workos_emulator.ids import iso

    emu = emulator.emulator
    with emu.store.lock:
        conn = emu.store.get("connections", connection_id, "Connection")
        entity = {"object": "saml_idp_signing_certificate", "id": "cert_unreadable", "value": UNREADABLE,
                  "not_before": iso(utcnow() - timedelta(days=1)), "not_after": iso(utcnow() + timedelta(days=days)),
                  "created_at": iso(), "_fingerprint": "unreadable", "_verified": 0, "_last_verified_at": None}
        conn.setdefault("_certs", []).append(entity)
    return "cert_unreadable"


def test_an_unreadable_certificate_is_forecast_from_workos_expiry(app: Flask, db_session: Any, workos_client: Any,
                                                                   emulator: Any) -> None:
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    db_session.commit()
    cert_id = hold_unreadable(emulator, GLOBEX_CONN, 20)
    result = app.test_cli_runner().invoke(args=["hatidata", "sso", "forecast-certificates"])
    assert result.exit_code == 0, result.output
    db_session.expire_all()
    alert = db_session.scalar(select(OrganizationAlert).where(OrganizationAlert.target_id == cert_id))
    assert (alert.organization_id, alert.details["threshold_days"], alert.details["fingerprint"]) == (org.id, 30, None)
    assert "cannot read" in alert.message


def test_an_expired_certificate_is_forecast_as_expired_once(app: Flask, db_session: Any,
                                                            workos_client: Any) -> None:
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    pem, _ = pem_and_b64(100, "old.globex.test")
    cert = workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=pem)
    assert cert.not_after is not None
    first = cert_forecasts.forecast(db_session, workos_client, org, CAUSE, cert.not_after + timedelta(seconds=1))
    again = cert_forecasts.forecast(db_session, workos_client, org, CAUSE, cert.not_after + timedelta(days=3))
    db_session.commit()
    assert (first.raised, again.raised) == ((cert.id,), ())
    assert expiry_alerts(db_session, org.id) == [(cert.id, 0, True)]


def test_retiring_resolves_the_forecasts_of_every_certificate_no_longer_held(app: Flask, db_session: Any,
                                                                             workos_client: Any) -> None:
    """A restore after a failed test sign-in gives the old certificate a new id: its forecast names the first id,
    and is resolved with the rest when the rotation retires (services.rotation_proof uses resolve_unheld)."""
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    kept_pem, _ = pem_and_b64(60, "kept.globex.test")
    gone_pem, _ = pem_and_b64(50, "gone.globex.test")
    kept = workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=kept_pem)
    gone = workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=gone_pem)
    cert_forecasts.forecast(db_session, workos_client, org, CAUSE, utcnow())
    db_session.commit()
    assert [(t, open_) for t, _, open_ in expiry_alerts(db_session, org.id)] == sorted([(kept.id, True),
                                                                                        (gone.id, True)])
    workos_client.sso.delete_connection_saml_idp_signing_cert(GLOBEX_CONN, gone.id)
    assert cert_forecasts.resolve_unheld(db_session, org.id, {kept.id}, CAUSE, utcnow()) == [gone.id]
    db_session.commit()
    assert {t: open_ for t, _, open_ in expiry_alerts(db_session, org.id)} == {kept.id: True, gone.id: False}
