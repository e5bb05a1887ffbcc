"""``/admin/policy``: the organization's access policy as a form for its admins (the API's twin)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, render_template, request
from werkzeug.wrappers import Response

from .conflict_reruns import rerun_on_conflict
from .errors import AppError
from .extensions import db
from .identity import browser_session_required, current_identity, request_cause, runtime
from .models import SIGN_IN_METHODS
from .services import access_policy, break_glass, tenant_admin

bp = Blueprint("policy_page", __name__)

DURATIONS = ("idle_timeout", "absolute_lifetime", "remembered_lifetime", "step_up_window")


def _require_admin() -> None:
    if not current_identity.has_permission("sso:manage"):
        raise AppError("Only an organization's admins may change its access policy.", status=403, code="forbidden",
                       details={"missing_permissions": ["sso:manage"]})


def _defaults() -> dict[str, int]:
    policy = runtime().policy
    return {"default_idle": policy.active_ttl, "default_remembered": policy.remembered_ttl}


def _changes(form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The policy changes a submitted form asks for, and the fields it could not read."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in DURATIONS:
        text = str(form.get(name, "")).strip()
        if not text:
            changes[name] = None
        elif text.isdigit():
            changes[name] = int(text)
        else:
            errors[name] = "Whole seconds, or empty for the default."
    methods = [m for m in SIGN_IN_METHODS if form.get(f"method_{m}")]
    changes["allowed_methods"] = None if methods == list(SIGN_IN_METHODS) else methods
    lines = [line.strip() for line in str(form.get("ip_allowlist", "")).splitlines() if line.strip()]
    changes["ip_allowlist"] = lines or None
    changes["ip_allowlist_applies_to_api_keys"] = bool(form.get("ip_allowlist_applies_to_api_keys"))
    return changes, errors


def _break_glass(session: Any, organization_id: str) -> list[break_glass.BreakGlassMember]:
    return break_glass.members(session, tenant_admin.get_organization(session, organization_id))


@bp.route("/admin/policy", methods=["GET", "POST"])
@browser_session_required
@rerun_on_conflict
def policy_form() -> Response | tuple[str, int] | str:
    """GET: the form with the policy in force (admins only: 403 otherwise; signed out: to the login page).
    POST (CSRF): apply it like ``PATCH /api/v1/organization/policy`` and redirect back (``?saved=1``); 422 with
    the fields at fault, or 409 with the lock-out explanation, re-rendering the form as submitted."""
    _require_admin()
    session = db.session()
    org_id = current_identity.organization_id
    if request.method == "GET":
        if request.args.get("saved") not in (None, "1"):  # only the redirect after a save sets it
            abort(400, description="The 'saved' parameter must be 1.")
        policy = access_policy.get_policy(session, org_id, **_defaults()).to_json()
        return render_template("admin_policy.html", policy=policy, methods=SIGN_IN_METHODS, errors={},
                               message=None, saved=request.args.get("saved") == "1", bounds=access_policy.BOUNDS,
                               break_glass=_break_glass(session, org_id))
    changes, errors = _changes(request.form)
    current = access_policy.get_policy(session, org_id, **_defaults()).to_json()
    # Only what the admin changed: a default shown in the form is not pinned by saving it unchanged.
    changes = {k: v for k, v in changes.items()
               if v != current[k] and not (k == "allowed_methods" and v is None
                                           and current[k] == list(SIGN_IN_METHODS))
               and not (k == "ip_allowlist" and v is None and current[k] == [])}
    status, message = 422, "Some fields need attention."
    if not errors:
        caller = access_policy.Caller(address=request.remote_addr, session_id=current_identity.session_id)
        try:
            access_policy.update_policy(session, organization_id=org_id, changes=changes, caller=caller,
                                        cause=request_cause(), **_defaults())
            session.commit()
            return redirect("/admin/policy?saved=1", code=303)
        except AppError as exc:
            session.rollback()
            status, message = exc.status, exc.message
            fields = (exc.details or {}).get("fields") or {}
            errors = {name: " ".join(problems) for name, problems in fields.items()}
            if "field" in (exc.details or {}):
                errors[str(exc.details["field"])] = exc.message
    shown = {**current, **changes}
    shown["ip_allowlist"] = shown["ip_allowlist"] or []
    shown["allowed_methods"] = list(SIGN_IN_METHODS) if shown["allowed_methods"] is None else shown["allowed_methods"]
    return render_template("admin_policy.html", policy=shown, methods=SIGN_IN_METHODS, errors=errors,
                           message=message, saved=False, bounds=access_policy.BOUNDS,
                           break_glass=_break_glass(session, org_id)), status
