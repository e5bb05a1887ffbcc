"""The sign-ins page (``/admin/sso/sign-ins``): the organization's SSO sign-in attempts for its IT admin, why each
failed and the fix in the IdP's own words. Thin views over :mod:`hatidata_auth.services.sign_in_attempts`.

Routes:

- ``GET  /admin/sso/sign-ins/``               the attempts, newest first (``reason``, ``outcome``, ``email``,
                                              ``after``: the id the next page starts below)
- ``POST /admin/sso/sign-ins/<id>/reveal``    the same page with one attempt's attribute values shown (audited)
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request, url_for

from ..extensions import db
from ..idp import SIGN_IN_REASONS, get_registry
from ..services import paging, sign_in_attempts
from .views import _cause, _organization, admin_only

bp = Blueprint("sso_sign_ins", __name__, url_prefix="/admin/sso/sign-ins", template_folder="templates")

PAGE_SIZE = 50
REASON_LABELS: dict[str, str] = {
    "not_assigned_to_app": "Not assigned to the app",
    "missing_attribute": "Missing attribute",
    "email_outside_domains": "Email outside the organization's domains",
    "connection_inactive": "Connection inactive",
    "certificate_expired": "Certificate expired",
    "not_a_member": "Membership inactive",
    "no_role": "No role granted",
    "policy_refused": "Refused by the sign-in policy",
    "idp_error": "Identity provider error",
    "unknown": "Unknown",
}
assert set(REASON_LABELS) == set(SIGN_IN_REASONS), "every reason needs a label"


def _filters() -> dict[str, str | None]:
    reason = request.values.get("reason") or None
    outcome = request.values.get("outcome") or None
    return {"reason": reason if reason in SIGN_IN_REASONS else None,
            "outcome": outcome if outcome in sign_in_attempts.OUTCOMES else None,
            "email": (request.values.get("email") or "").strip()[:320] or None}


def _page(reveal: set[int], status: int = 200) -> tuple[str, int]:
    org = _organization()
    after = request.values.get("after", "")
    filters = _filters()
    page = sign_in_attempts.attempts_page(
        db.session(), org.id, paging.PageRequest(int(after) if after.isdigit() else None, PAGE_SIZE),
        sign_in_attempts.fixer(get_registry(current_app)), reveal=reveal, **filters)
    query: dict[str, Any] = {k: v for k, v in filters.items() if v}
    next_url = None if page.next_key is None else url_for(".sign_ins", after=page.next_key, **query)
    return render_template("sso_wizard/sign_ins.html", org=org, attempts=page.items, next_url=next_url,
                           filters=filters, reasons=REASON_LABELS,
                           outcomes=sign_in_attempts.OUTCOMES), status


@bp.get("/")
@admin_only
def sign_ins() -> Any:
    """The organization's sign-in attempts, filtered; 200, 403 for a non-admin or an API caller."""
    return _page(set())


@bp.post("/<int:attempt_id>/reveal")
@admin_only
def reveal(attempt_id: int) -> Any:
    """Show one attempt's attribute values, audited ``sign_in_attempts.attributes_revealed``; 200, 400 without a
    valid CSRF token, 403 for a non-admin, 404 for an attempt of another organization."""
    org = _organization()
    if sign_in_attempts.find(db.session(), org.id, attempt_id) is None:
        abort(404)
    sign_in_attempts.audit_reveal(db.session(), org.id, [attempt_id], _cause())
    db.session.commit()
    return _page({attempt_id})
