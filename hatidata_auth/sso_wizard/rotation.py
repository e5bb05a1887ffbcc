"""The "Rotate certificate" flow (``/admin/sso/rotation/``): thin views over
:mod:`hatidata_auth.services.cert_rotation`. Every route is step-up sensitive (under ``/admin/sso``), for signed-in
admins only; forms carry the CSRF token.

Routes:

- ``GET  /admin/sso/rotation/``            the connection's rotation: state, the IdP's steps, the next action.
                                           200; 403 non-admin or API caller; 404 without an organization
- ``POST /admin/sso/rotation/start``       the new metadata (``metadata_file`` upload, or ``metadata_url``):
                                           303 to the page; 422 page naming the field (bad metadata, no new
                                           certificate, URL unreachable or private), 409 page (no connection, a
                                           rotation in progress), 502 page (WorkOS refused)
- ``POST /admin/sso/rotation/switched``    the IdP now signs with the new certificate: 303; 404/409 page
- ``POST /admin/sso/rotation/test``        302 to WorkOS for the test sign-in; 409 page unless ``switched``
- ``GET  /admin/sso/rotation/callback``    where WorkOS returns it: 303 to the page (old certificate retired);
                                           400 page (state mismatch, the IdP refused: recorded as a failed test
                                           sign-in), 403/409/502 page from the service
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from ..errors import AppError
from ..extensions import db
from ..idp import IdPPlugin, SamlMetadata, get_registry
from ..models import Organization, utcnow
from ..services import cert_rotation, rotation_metadata, sign_in_attempts, sso_setup
from ..services.cert_rotation import RotationError
from ..urls import external_url
from .views import _cause, _organization, admin_only

bp = Blueprint("sso_rotation", __name__, url_prefix="/admin/sso/rotation", template_folder="templates")
STATE_KEY = "sso_rotation_state"


def _client() -> Any:
    return current_app.extensions["hatidata_workos"].client


def _plugin_of(org: Organization) -> IdPPlugin | None:
    return rotation_metadata.plugin_for(get_registry(current_app), org)


def _page(org: Organization, errors: dict[str, str] | None = None, status: int = 200) -> tuple[str, int]:
    plugin = _plugin_of(org)
    rotation = cert_rotation.current(db.session(), org.id, org.connection_id)
    return render_template("sso_wizard/rotation.html", org=org, plugin=plugin, rotation=rotation,
                           errors=errors or {},
                           alert_open=cert_rotation.open_renewal_alert(db.session(), org.id, org.connection_id),
                           ), status


@bp.get("/")
@admin_only
def page() -> tuple[str, int]:
    """The rotation page."""
    return _page(_organization())


def _metadata(org: Organization) -> tuple[SamlMetadata, str]:
    """The uploaded or fetched metadata, checked by the organization's plugin; raises RotationError (422)."""
    upload = request.files.get("metadata_file")
    xml = upload.read(rotation_metadata.MAX_BYTES + 1) if upload is not None and upload.filename else None
    return rotation_metadata.read(_plugin_of(org), xml=xml, url=(request.form.get("metadata_url") or "").strip(),
                                  now=utcnow())


def _refused(org: Organization, exc: AppError, field: str | None = None) -> tuple[str, int]:
    """The page again with *exc*'s message at its field (*field*, else the one it names, else ``rotation``)."""
    db.session.rollback()
    fields = [field] if field else list((exc.details or {}).get("fields") or ["rotation"])
    return _page(org, {str(name): exc.message for name in fields}, exc.status)


@bp.post("/start")
@admin_only
def start() -> Any:
    """Trust the new metadata's certificate beside the old one."""
    from ..workos import WorkOSFailure

    org = _organization()
    try:
        cert_rotation.connection_of(org)
        metadata, source = _metadata(org)
        cert_rotation.start(db.session(), _client(), org, metadata, source, _cause())
    except RotationError as exc:
        return _refused(org, exc)
    except WorkOSFailure as exc:
        return _refused(org, RotationError(f"WorkOS refused the certificate: {exc.message}", status=502))
    db.session.commit()
    return redirect(url_for(".page"), 303)


@bp.post("/switched")
@admin_only
def switched() -> Any:
    """The admin made the new certificate the IdP's active one."""
    org = _organization()
    try:
        cert_rotation.mark_switched(db.session(), org, _cause())
    except RotationError as exc:
        return _refused(org, exc)
    db.session.commit()
    return redirect(url_for(".page"), 303)


@bp.post("/test")
@admin_only
def test_sign_in() -> Any:
    """Send the admin through the connection for the test sign-in."""
    org = _organization()
    try:
        connection_id = cert_rotation.connection_for_test(db.session(), org)
    except RotationError as exc:
        return _refused(org, exc)
    state = secrets.token_urlsafe(24)
    session[STATE_KEY] = state
    return redirect(sso_setup.build_test_login_url(_client(), connection_id, external_url(".callback"), state,
                                                   request.form.get("login_hint") or None))


@bp.get("/callback")
@admin_only
def callback() -> Any:
    """The test sign-in's answer: retire the old certificate when it passed."""
    org = _organization()
    expected = session.pop(STATE_KEY, None)
    if not expected or not secrets.compare_digest(expected, request.args.get("state", "")):
        return _page(org, {"test": "This test sign-in was not started here (state mismatch); start it again."}, 400)
    if request.args.get("error"):
        sign_in_attempts.record_test_refusal(
            db.session(), organization_id=org.id, plugin=getattr(_plugin_of(org), "name", ""),
            connection_id=org.connection_id, error=request.args["error"],
            description=request.args.get("error_description"), cause=_cause())
        db.session.commit()
        reason = request.args.get("error_description") or request.args["error"]
        return _page(org, {"test": f"The test sign-in failed: {reason}"}, 400)
    from ..workos import WorkOSFailure

    try:
        cert_rotation.finish_test_sign_in(db.session(), _client(), org, request.args.get("code", ""), _cause())
    except RotationError as exc:
        return _refused(org, exc, "test")
    except WorkOSFailure as exc:  # removing the old certificate failed: nothing is committed, the test can be rerun
        return _refused(org, RotationError(f"WorkOS refused: {exc.message}", status=502), "test")
    db.session.commit()
    return redirect(url_for(".page"), 303)
