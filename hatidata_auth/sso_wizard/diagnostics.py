"""The sign-ins page (``/admin/sso/sign-ins``): the organization's SSO sign-in attempts for its IT admin, why each
failed and the fix in the IdP's own words. Thin views over :mod:`hatidata_auth.services.sign_in_attempts`.

Routes:

- ``GET  /admin/sso/sign-ins/``               the attempts, newest first (``reason``, ``outcome``, ``email``,
                                              ``after``: the id the next page starts below;
                                              an invalid one is a 400 page naming it)
- ``POST /admin/sso/sign-ins/<id>/reveal``    the same page with one attempt's attribute values shown (audited)
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request, url_for

from ..errors import AppError
from ..extensions import db
from ..idp import SIGN_IN_REASONS, get_registry
from ..services import paging, sign_in_attempts
from .views import _cause, _organization, admin_only

bp = Blueprint("sso_sign_ins", __name__, url_prefix="/admin/sso/sign-ins", template_folder="templates")

PAGE_SIZE = 50
MAX_EMAIL = 320
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


def _invalid(name: str, expected: str) -> AppError:
    return AppError(f"The {name!r} parameter must be {expected}.", code="invalid_parameter",
                    details={"fields": {name: [f"must be {expected}"]}})


def _filters() -> dict[str, str | None]:
    """The page's filters; an unknown ``reason`` or ``outcome`` or an overlong ``email`` is a 400 naming it."""
    reason = request.values.get("reason") or None
    outcome = request.values.get("outcome") or None
    email = (request.values.get("email") or "").strip() or None
    if reason is not None and reason not in SIGN_IN_REASONS:
        raise _invalid("reason", "one of " + ", ".join(SIGN_IN_REASONS))
    if outcome is not None and outcome not in sign_in_attempts.OUTCOMES:
        raise _invalid("outcome", "success or failure")
    if email is not None and len(email) > MAX_EMAIL:
        raise _invalid("email", f"at most {MAX_EMAIL} characters")
    return {"reason": reason, "outcome": outcome, "email": email}


def _after() -> int | None:
    """The id the page starts below: the key :func:`_page` linked to, a positive whole number in the id column's
    range (32-bit on PostgreSQL), else a 400 naming ``after`` -- never a database error."""
    after = request.values.get("after") or None
    if after is None:
        return None
    largest = sign_in_attempts.PAGE_KEY.largest
    if not (after.isascii() and after.isdigit() and len(after) <= 19 and 0 < int(after) <= largest):
        raise _invalid("after", f"a whole number from 1 to {largest}")
    return int(after)


def _page(reveal: set[int], status: int = 200) -> tuple[str, int]:
    org = _organization()
    filters = _filters()
    page = sign_in_attempts.attempts_page(
        db.session(), org.id, paging.PageRequest(_after(), PAGE_SIZE),
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
    if sign_in_attempts.reveal(db.session(), org.id, attempt_id, sign_in_attempts.fixer(get_registry(current_app)),
                               _cause()) is None:
        abort(404)
    db.session.commit()
    return _page({attempt_id})
