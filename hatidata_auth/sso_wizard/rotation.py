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
- ``POST /admin/sso/rotation/test``        the old certificates are set aside at WorkOS (only the new one verifies
                                           the test sign-in), then 302 to WorkOS for it; 409 page unless
                                           ``switched``, 502 page (WorkOS refused: the old ones are restored)
- ``GET  /admin/sso/rotation/callback``    where WorkOS returns it: 303 to the page (old certificates retired);
                                           400 page (state mismatch; the IdP refused, recorded as a failed test
                                           sign-in, or the sign-in proved nothing: the old certificates are
                                           restored, back to ``both_trusted``), 409/502 page from the service
- ``POST /admin/sso/rotation/cancel``      end a rotation that is not retired (wrong metadata): 303 to the page;
                                           404/409/502 page

The page view (and every step) restores old certificates a test sign-in left set aside for longer than
``cert_rotation.TEST_WINDOW``.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from ..errors import AppError
from ..extensions import db
from ..idp import IdPPlugin, SamlMetadata, get_registry
from ..models import Organization, utcnow
from ..services import cert_rotation, rotation_metadata, rotation_proof, sign_in_attempts, sso_setup
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
    from ..workos import WorkOSFailure

    try:
        restored = cert_rotation.restore_abandoned(db.session(), _client(), org, _cause())
    except WorkOSFailure as exc:  # retried on the next request; the page says so
        db.session.rollback()
        restored = None
        errors = {**(errors or {}), "test": f"Restoring the old certificate at WorkOS failed ({exc.message}); "
                                            "reload this page to retry."}
    if restored is not None:
        db.session.commit()
        errors = {**(errors or {}), "test": restored.notice or ""}
    plugin = _plugin_of(org)
    rotation = cert_rotation.current(db.session(), org.id, org.connection_id)
    return render_template("sso_wizard/rotation.html", org=org, plugin=plugin, rotation=rotation,
                           errors=errors or {},
                           alert_open=cert_rotation.open_renewal_alert(db.session(), org.id, org.connection_id),
                           test_window_minutes=int(cert_rotation.TEST_WINDOW.total_seconds() // 60),
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
    """Set the old certificates aside at WorkOS, then send the admin through the connection for the test."""
    from ..workos import WorkOSFailure

    org = _organization()
    try:
        connection_id = rotation_proof.begin_test_sign_in(db.session(), _client(), org, _cause())
    except RotationError as exc:
        return _refused(org, exc, "test")
    except WorkOSFailure as exc:
        return _refused(org, RotationError(f"WorkOS refused: {exc.message}", status=502), "test")
    db.session.commit()  # the old certificates' PEMs are kept before WorkOS forgets them
    try:
        rotation_proof.set_aside_old(db.session(), _client(), org)
    except (RotationError, WorkOSFailure) as exc:
        db.session.rollback()
        return _put_back(org, f"setting the old certificate aside failed: {exc}", 502)
    db.session.commit()
    state = secrets.token_urlsafe(24)
    session[STATE_KEY] = state
    return redirect(sso_setup.build_test_login_url(_client(), connection_id, external_url(".callback"), state,
                                                   request.form.get("login_hint") or None))


def _put_back(org: Organization, reason: str, status: int) -> tuple[str, int]:
    """Restore what the test set aside (the page again with why, at the ``test`` field)."""
    from ..workos import WorkOSFailure

    try:
        rotation = rotation_proof.fail_test_sign_in(db.session(), _client(), org, _cause(), reason)
    except WorkOSFailure as exc:
        db.session.rollback()
        message = (f"The test sign-in failed ({reason}) and restoring the old certificate at WorkOS failed too "
                   f"({exc.message}); it is retried on the next page view.")
        return _page(org, {"test": message}, 502)
    db.session.commit()
    return _page(org, {"test": rotation.notice or f"The test sign-in failed: {reason}"}, status)


@bp.get("/callback")
@admin_only
def callback() -> Any:
    """The test sign-in's answer: retire the old certificates when it passed, else restore them."""
    org = _organization()
    expected = session.pop(STATE_KEY, None)
    if not expected or not secrets.compare_digest(expected, request.args.get("state", "")):
        # Whatever came back, a test left waiting must not keep the old certificates set aside: restore them now.
        try:
            return _put_back(org, "its answer does not match the test started in this browser (state mismatch); "
                                  "start it again", 400)
        except RotationError:
            return _page(org, {"test": "This test sign-in was not started here (state mismatch); start it again."},
                         400)
    if request.args.get("error"):
        sign_in_attempts.record_test_refusal(
            db.session(), organization_id=org.id, plugin=getattr(_plugin_of(org), "name", ""),
            connection_id=org.connection_id, error=request.args["error"],
            description=request.args.get("error_description"), cause=_cause())
        db.session.commit()
        return _put_back(org, request.args.get("error_description") or request.args["error"], 400)
    from ..workos import WorkOSFailure

    try:
        rotation = rotation_proof.finish_test_sign_in(db.session(), _client(), org, request.args.get("code", ""),
                                                      _cause())
    except RotationError as exc:
        return _refused(org, exc, "test")
    except WorkOSFailure as exc:  # removing or restoring at WorkOS failed: nothing is committed, rerun the test
        return _refused(org, RotationError(f"WorkOS refused: {exc.message}", status=502), "test")
    db.session.commit()
    if rotation.notice:
        return _page(org, {"test": rotation.notice}, 400)
    return redirect(url_for(".page"), 303)


@bp.post("/cancel")
@admin_only
def cancel() -> Any:
    """End the rotation (not retired): remove the certificate it added, restore any set aside."""
    from ..workos import WorkOSFailure

    org = _organization()
    try:
        cert_rotation.cancel(db.session(), _client(), org, _cause())
    except RotationError as exc:
        return _refused(org, exc)
    except WorkOSFailure as exc:
        return _refused(org, RotationError(f"WorkOS refused: {exc.message}", status=502))
    db.session.commit()
    return redirect(url_for(".page"), 303)
