"""The SSO setup wizard pages (``/admin/sso/…``): thin views over :mod:`.wizard`, :mod:`.steps` and sso_setup.

Routes:

- ``GET  /admin/sso/``                                  choose an IdP; status and health of the current setup
- ``POST /admin/sso/start``                             start or resume a plugin's wizard (form: ``plugin``)
- ``GET  /admin/sso/<plugin>/wizard/``                  go to the current step
- ``GET|POST /admin/sso/<plugin>/wizard/<step>``        show or submit a step
- ``GET  /admin/sso/<plugin>/wizard/reset``             ask to confirm starting over
- ``POST /admin/sso/<plugin>/wizard/reset``             start the wizard over (form: ``confirm=yes``)
- ``GET  /admin/sso/<plugin>/test-login/callback``      where WorkOS returns a test sign-in
- ``POST /admin/sso/<plugin>/portal-link``              generate an Admin Portal link (form: ``intent``)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from ..causes import Cause
from ..conflict_reruns import rerun_on_conflict
from ..errors import AppError
from ..extensions import db
from ..idp import IdPPlugin, SetupStatus, get_registry
from ..models import Organization, utcnow
from ..roles import Role
from ..services import fanout_jobs, sign_in_attempts, sso_health, sso_setup
from ..urls import external_url
from . import mapping_step, recovery, wizard
from . import steps as step_handlers

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_SP_BASE_URL = "https://auth.workos.com"

bp = Blueprint("sso_wizard", __name__, url_prefix="/admin/sso", template_folder="templates",
               static_folder="static", static_url_path="/static")


def admin_only(view: F) -> F:
    """Only a signed-in (browser session) admin of the organization may use the wizard. A write runs again when the
    database rolls it back to break a lock conflict (``conflict_reruns``: a mapping step holds members' keys)."""
    from ..identity import current_identity, require_role

    rerun = rerun_on_conflict(view)

    @wraps(rerun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_identity.auth_type != "session":
            raise AppError("The SSO setup wizard is for signed-in admins only.", status=403, code="forbidden")
        return rerun(*args, **kwargs)

    return require_role(Role.ADMIN)(cast(F, wrapped))


def _cause() -> Cause:
    from ..identity import request_cause

    return request_cause()


def _identity() -> Any:
    from ..identity import current_identity

    return current_identity


def _organization() -> Organization:
    org = wizard.organization(db.session(), _identity().organization_id)
    if org is None:
        abort(404)
    return org


def _plugin(name: str) -> IdPPlugin:
    plugin = get_registry(current_app).get(name)
    if plugin is None:
        abort(404)
    return plugin


def sp_base_url() -> str:
    """Where WorkOS receives SAML responses: ``HATIDATA_WORKOS_SP_BASE_URL``, a custom WorkOS URL, or WorkOS's."""
    configured = current_app.config.get("HATIDATA_WORKOS_SP_BASE_URL")
    if configured:
        return str(configured)
    base = current_app.config.get("WORKOS_BASE_URL")
    if base and "api.workos.com" not in base:
        return str(base)
    return DEFAULT_SP_BASE_URL


def sp_values_for(plugin: IdPPlugin) -> dict[str, str] | None:
    """The current organization's ACS URL etc. for *plugin*, once its wizard has started."""
    progress = wizard.get_progress(db.session(), _identity().organization_id, plugin.name)
    if progress is None:
        return None
    return sso_setup.sp_values(sp_base_url(), str(progress.data["sp_key"])).as_dict()


def _context(plugin: IdPPlugin, org: Organization) -> step_handlers.StepContext:
    progress = wizard.get_progress(db.session(), org.id, plugin.name)
    if progress is None:
        raise wizard.WizardRefused(f"Start the {plugin.display_name} setup first.", code="wizard_not_started")
    if wizard.refresh(db.session(), plugin, progress, _cause()):
        db.session.commit()
    client = current_app.extensions["hatidata_workos"].client
    check = recovery.reconcile(db.session(), client, org, plugin, progress, _cause())
    if check.status == "gone":
        db.session.commit()
    return step_handlers.StepContext(
        session=db.session(), client=client, organization=org,
        plugin=plugin, progress=progress, cause=_cause(), now=utcnow(),
        sp=sso_setup.sp_values(sp_base_url(), str(progress.data["sp_key"])), connection=check,
        fanout_chunk=fanout_jobs.chunk_size(current_app.config.get("HATIDATA_FANOUT_CHUNK")),
    )


def _status(plugin: IdPPlugin | None, org: Organization, data: dict[str, Any]) -> \
        tuple[list[Any], sso_health.ConnectionHealth]:
    """The plugin's health checks and the connection's health, from the certificate expiry the wizard holds."""
    expiry = (data.get("metadata") or {}).get("certificate_not_after")
    health = sso_health.connection_health(db.session(), org,
                                          metadata_not_after=datetime.fromisoformat(expiry) if expiry else None)
    if plugin is None:
        return [], health
    status = SetupStatus(now=utcnow(), connection_id=org.connection_id, connection_state=org.connection_state,
                         directory_id=org.directory_id, directory_state=org.directory_state,
                         certificate_not_after=health.certificate_not_after,
                         last_test_login_ok=(data.get("test_login") or {}).get("ok"))
    return list(plugin.health_checks(status)), health


@bp.get("/")
@admin_only
def index() -> str:
    """Choose an identity provider; see the current setup's progress and the connection's health (state, last
    successful sign-in, certificate expiry, open alerts, directory state and last event). Answers 200; 403 for
    a non-admin or an API caller; 404 without an organization."""
    org = _organization()
    registry = get_registry(current_app)
    progress = {p.name: wizard.get_progress(db.session(), org.id, p.name) for p in registry}
    active = registry.get(org.idp_plugin or "")
    active_progress = progress.get(active.name) if active else None
    active_data = dict(active_progress.data) if active_progress else {}
    checks, health = _status(active, org, active_data)
    return render_template("sso_wizard/index.html", plugins=list(registry), progress=progress, org=org,
                           active=active, health=checks, connection=health, alerts=health.open_alerts)


@bp.post("/start")
@admin_only
def start() -> Response:
    """Start or resume the wizard of the chosen plugin."""
    plugin = _plugin(request.form.get("plugin", ""))
    org = _organization()
    progress = wizard.start(db.session(), org.id, plugin, _cause())
    db.session.commit()
    return redirect(url_for(".step", plugin=plugin.name, key=progress.current_step))


@bp.get("/<plugin>/wizard/")
@admin_only
def resume(plugin: str) -> Response:
    """Go to the current step."""
    ctx = _context(_plugin(plugin), _organization())
    return redirect(url_for(".step", plugin=plugin, key=ctx.progress.current_step))


@bp.route("/<plugin>/wizard/reset", methods=["GET", "POST"])
@admin_only
def reset(plugin: str) -> Any:
    """GET: the confirmation page. POST with ``confirm=yes``: start over at the first step, forgetting the stored
    connection id (the connection stays at WorkOS; the metadata step offers the organization's active one), then
    redirect there with a notice; POST without it: the confirmation page again (422)."""
    ctx = _context(_plugin(plugin), _organization())
    if request.method == "GET" or request.form.get("confirm") != "yes":
        status = 422 if request.method == "POST" else 200
        errors = {"confirm": "Tick “Yes, start over” to confirm."} if status == 422 else {}
        return render_template("sso_wizard/reset.html", plugin=ctx.plugin, state=ctx.state, errors=errors,
                               connection_id=ctx.progress.data.get("connection_id")), status
    wizard.reset(db.session(), ctx.plugin, ctx.progress, ctx.cause)
    db.session.commit()
    flash(f"The {ctx.plugin.display_name} setup was started over.", "notice")
    return redirect(url_for(".step", plugin=plugin, key=ctx.progress.current_step))


def _guide_url(plugin: IdPPlugin, protocol: str) -> str | None:
    endpoint = f"{plugin.blueprint_name}.guide"
    return url_for(endpoint, protocol=protocol) if endpoint in current_app.view_functions else None


def _render(ctx: step_handlers.StepContext, key: str, errors: dict[str, str] | None = None,
            extra: dict[str, Any] | None = None, status: int = 200) -> tuple[str, int]:
    state = ctx.state
    step = state.step(key)
    values: dict[str, Any] = {"rows": None, "default_role": ctx.organization.default_role or "none",
                              "synced_groups": ()}
    if step.kind == "role_mapping":
        values["rows"] = step_handlers.mapping_rows(ctx)
        values["synced_groups"] = mapping_step.synced(ctx)
    values.update(extra or {})
    html = render_template(
        "sso_wizard/wizard.html", plugin=ctx.plugin, state=state, step=step, sp=ctx.sp.as_dict(),
        errors=errors or {}, form=request.form if request.method == "POST" else {}, org=ctx.organization,
        data=state.data, connection=ctx.connection,
        warnings=[w for w in ctx.plugin.warnings(state.protocol) if w.step in (None, step.kind)],
        step_template=step.template or f"sso_wizard/steps/{step.kind}.html", roles=step_handlers.ROLE_CHOICES,
        guide_url=_guide_url(ctx.plugin, state.protocol),
        **values,
    )
    return html, status


@bp.route("/<plugin>/wizard/<key>", methods=["GET", "POST"])
@admin_only
def step(plugin: str, key: str) -> Any:
    """Show a step, or handle its form: inline errors and nothing saved, or save, audit and go on."""
    ctx = _context(_plugin(plugin), _organization())
    if request.method == "GET" and not ctx.state.reachable(key):
        return redirect(url_for(".step", plugin=plugin, key=ctx.progress.current_step))
    wizard.require_reachable(ctx.plugin, ctx.progress, key)
    if request.method == "GET":
        return _render(ctx, key)
    current = ctx.state.step(key)
    outcome = step_handlers.HANDLERS[current.kind](ctx, request.form, request.files)
    if outcome.errors:
        db.session.rollback()
        return _render(ctx, key, outcome.errors, outcome.render, status=422)
    if not outcome.complete:
        if outcome.data:
            wizard.update_data(ctx.progress, outcome.data)
            db.session.commit()
        if current.kind == "test_login":
            return _start_test_login(ctx, key)
        return _render(ctx, key, extra=outcome.render)
    following = wizard.complete_step(db.session(), ctx.plugin, ctx.progress, key, ctx.cause,
                                     data=outcome.data, details=outcome.details)
    db.session.commit()
    if following is None:
        return redirect(url_for(".index", done=ctx.plugin.name))
    return redirect(url_for(".step", plugin=plugin, key=following.key))


def _start_test_login(ctx: step_handlers.StepContext, key: str) -> Any:
    connection_id = ctx.progress.data.get("connection_id")
    if not connection_id:
        return _render(ctx, key, {"test_login": "Start test sign-in: there is no connection yet; submit the metadata "
                                                "step first."}, status=422)
    state = secrets.token_urlsafe(24)
    session[f"sso_test_state:{ctx.plugin.name}"] = state
    url = sso_setup.build_test_login_url(
        ctx.client, connection_id, external_url(".test_login_callback", plugin=ctx.plugin.name), state,
        ctx.progress.data.get("login_hint"))
    return redirect(url)


@bp.get("/<plugin>/test-login/callback")
@admin_only
def test_login_callback(plugin: str) -> Any:
    """Receive the test sign-in from WorkOS, evaluate the profile and show it on the test step."""
    ctx = _context(_plugin(plugin), _organization())
    key = next((s.key for s in ctx.state.steps if s.kind == "test_login"), None)
    if key is None:
        abort(404)
    expected = session.pop(f"sso_test_state:{plugin}", None)
    given = request.args.get("state", "")
    if not expected or not secrets.compare_digest(expected, given):
        return _render(ctx, key, {"test_login": "This test sign-in was not started here (state mismatch); start "
                                                "it again."}, status=400)
    connection_id = ctx.progress.data.get("connection_id")
    if request.args.get("error"):
        sign_in_attempts.record_test_refusal(
            db.session(), organization_id=ctx.organization.id, plugin=plugin, connection_id=connection_id,
            error=request.args["error"], description=request.args.get("error_description"), cause=ctx.cause)
        db.session.commit()
        return _render(ctx, key, {"test_login": f"The IdP refused the sign-in: "
                                                f"{request.args.get('error_description') or request.args['error']}"},
                       status=400)
    try:
        result = sso_setup.finish_test_login(db.session(), ctx.client, ctx.organization, ctx.plugin, ctx.state.protocol,
                                             request.args.get("code", ""), ctx.cause,
                                             connection_id=str(ctx.progress.data.get("connection_id") or ""))
    except sso_setup.SetupError as exc:
        db.session.rollback()
        return _render(ctx, key, {"test_login": exc.message}, status=400)
    summary = result.as_dict()
    missing = next((c["idp_attribute"] for c in summary["checks"] if c["required"] and not c["present"]), None)
    sign_in_attempts.record_test_result(
        db.session(), organization_id=ctx.organization.id, plugin=plugin, connection_id=connection_id,
        profile={k: summary[k] for k in ("email", "idp_id", "first_name", "last_name", "groups")},
        missing=missing, role=result.role, cause=ctx.cause)
    wizard.update_data(ctx.progress, {"test_login": summary})
    db.session.commit()
    return redirect(url_for(".step", plugin=plugin, key=key))


@bp.post("/<plugin>/portal-link")
@admin_only
def portal_link(plugin: str) -> Any:
    """Generate a WorkOS Admin Portal link (``sso`` or ``dsync``) to hand to the customer's IT team."""
    p = _plugin(plugin)
    org = _organization()
    intent = request.form.get("intent", "sso")
    try:
        link = sso_setup.portal_link(db.session(), current_app.extensions["hatidata_workos"].client, org, intent,
                                     external_url(".index"), _cause())
    except sso_setup.SetupError as exc:
        db.session.rollback()
        return render_template("sso_wizard/portal_link.html", plugin=p, link=None, error=exc.message,
                               intent=intent), exc.status
    db.session.commit()
    return render_template("sso_wizard/portal_link.html", plugin=p, link=link, error=None, intent=intent)
