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

from ..extensions import db
from ..idp import IdPPlugin, SamlMetadata, get_registry
from ..models import Organization, utcnow
from ..services import cert_rotation, metadata_fetch, sign_in_attempts, sso_setup
from ..services.cert_rotation import RotationError
from ..urls import external_url
from .views import _cause, _organization, admin_only

bp = Blueprint("sso_rotation", __name__, url_prefix="/admin/sso/rotation", template_folder="templates")
STATE_KEY = "sso_rotation_state"
MAX_UPLOAD = metadata_fetch.MAX_BYTES


def _client() -> Any:
    return current_app.extensions["hatidata_workos"].client


def _plugin_of(org: Organization) -> IdPPlugin | None:
    """The organization's plugin: the one its setup activated, else the one whose WorkOS connection type it has."""
    registry = get_registry(current_app)
    found = registry.get(org.idp_plugin or "")
    if found is None and org.connection_type:
        found = next((p for p in registry if org.connection_type in p.connection_types.values()), None)
    return found


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
    plugin = _plugin_of(org)
    if plugin is None:
        raise RotationError("This organization's identity provider is not known.", code="no_plugin")
    upload = request.files.get("metadata_file")
    url = (request.form.get("metadata_url") or "").strip()
    if upload is not None and upload.filename:
        data, source, field = upload.read(MAX_UPLOAD + 1), "xml", "metadata_file"
        if len(data) > MAX_UPLOAD:
            raise RotationError("The metadata file is too large.", status=422, details={"field": field})
    elif url:
        checked = plugin.validate_metadata_url(url)
        if not checked.ok:
            raise RotationError(next(iter(checked.messages().values())), status=422,
                                details={"field": "metadata_url"})
        try:
            data = metadata_fetch.fetch(str(checked.value))
        except metadata_fetch.MetadataFetchError as exc:
            raise RotationError(exc.message, status=422, details={"field": "metadata_url"}) from exc
        source, field = "url", "metadata_url"
    else:
        raise RotationError("Upload the new metadata file or give its URL.", status=422,
                            details={"field": "metadata_file"})
    result = plugin.validate_metadata_xml(data, utcnow())
    if not result.ok or not isinstance(result.value, SamlMetadata):
        raise RotationError(next(iter(result.messages().values()), "Invalid metadata."), status=422,
                            details={"field": field})
    return result.value, source


def _refused(org: Organization, exc: RotationError) -> tuple[str, int]:
    db.session.rollback()
    field = str((exc.details or {}).get("field") or "rotation")
    return _page(org, {field: exc.message}, exc.status)


@bp.post("/start")
@admin_only
def start() -> Any:
    """Trust the new metadata's certificate beside the old one."""
    from ..workos import WorkOSFailure

    org = _organization()
    try:
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
        return _refused(org, RotationError(exc.message, status=exc.status, details={"field": "test"}))
    except WorkOSFailure as exc:  # removing the old certificate failed: nothing is committed, the test can be rerun
        return _refused(org, RotationError(f"WorkOS refused: {exc.message}", status=502, details={"field": "test"}))
    db.session.commit()
    return redirect(url_for(".page"), 303)
