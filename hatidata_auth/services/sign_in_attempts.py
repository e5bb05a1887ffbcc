"""SSO sign-in attempts of an organization, for its IT admin: what happened, why (a typed reason), how to fix it.

An attempt is seen by our callback (``/auth/callback`` once WorkOS vouched for the organization, and the SSO
wizard's test sign-in), by WorkOS's ``authentication.sso_*`` events, or by both: :func:`record_callback` and
:func:`record_event` merge the two sightings of one attempt (a success by its WorkOS session id; a failure by
organization, connection and error code within :data:`MATCH_WINDOW`, each row merged once). Rows are written in
the transaction of the audit event that records the same fact (``auth.login.succeeded``, ``sso.test_login``,
``authentication.*``), so they carry no audit event of their own; revealing attributes and expiry are audited.

Reasons (:data:`hatidata_auth.idp.SIGN_IN_REASONS`) come from WorkOS's error codes (:data:`WORKOS_ERROR_REASONS`),
the IdP's words in the error message (:data:`MESSAGE_REASONS`, checked first: WorkOS relays an IdP's refusal under
a generic code) and our own refusals (:data:`OUR_REFUSALS`). ``docs/api.md`` holds the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..idp import GENERIC_FIXES, SIGN_IN_REASONS, IdPPlugin
from ..models import SignInAttempt, utcnow
from . import audit, paging

OUTCOMES = ("success", "failure")
KINDS = ("sign_in", "test")
MATCH_WINDOW = timedelta(minutes=10)
MAX_ATTRIBUTES = 50
MAX_VALUE_LENGTH = 200
REDACTED = "[redacted]"

WORKOS_ERROR_REASONS: dict[str, str] = {
    # Redirect errors of ``/sso/authorize`` and ``/user_management/authorize`` (WorkOS "Error codes").
    "access_denied": "not_assigned_to_app",
    "connection_invalid": "connection_inactive",
    "connection_unlinked": "connection_inactive",
    "organization_invalid": "connection_inactive",
    "connection_domain_invalid": "email_outside_domains",
    "profile_not_allowed_outside_organization": "email_outside_domains",
    "connection_strategy_invalid": "idp_error",
    "signin_consent_denied": "idp_error",
    "oauth_failed": "idp_error",
    "server_error": "idp_error",
    # ``authentication.sso_failed``'s ``error.code`` (the spec's example).
    "mfa_challenge_failed": "idp_error",
}
"""WorkOS error code -> reason; a code not listed is ``unknown`` unless the message names a reason."""

MESSAGE_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Okta "User is not assigned to the client application.", Entra AADSTS50105, Google "app not configured for user".
    (re.compile(r"not assigned|AADSTS50105|app[ _]not[ _]configured[ _]for[ _]user", re.I), "not_assigned_to_app"),
    (re.compile(r"\bmissing\b.*\b(attribute|claim)|\b(attribute|claim)\b.*\bmissing\b", re.I), "missing_attribute"),
    (re.compile(r"certificate.*\bexpired|expired.*certificate", re.I), "certificate_expired"),
    (re.compile(r"connection.*\b(inactive|deactivated|draft)\b", re.I), "connection_inactive"),
)
"""The IdP's or WorkOS's words in an error message -> reason (first match wins, before the code)."""

OUR_REFUSALS: dict[str, str] = {
    "sso_enforced": "policy_refused",
    "method_not_allowed": "policy_refused",
    "foreign_domain": "email_outside_domains",
    "foreign_identity_source": "email_outside_domains",
    "other_organization": "email_outside_domains",
    "denied": "not_a_member",
    "no_role": "no_role",
    "missing_attribute": "missing_attribute",
}
"""Our own refusals (``auth_policy`` reasons, ``LoginFailed.reason``, test-login problems) -> reason."""

_ATTRIBUTE_NAME = re.compile(r"(?:attribute|claim)\s+[\"'\u201c]?([A-Za-z0-9_.:/-]{1,128})", re.I)
# Names of received attributes that may hold credentials: never stored, whatever the IdP sends.
_SECRET_NAME = re.compile(r"token|secret|password|passwd|code|assertion|saml|signature|session|cookie", re.I)

Fixer = Callable[[str | None, str, str | None], str]
"""``(plugin name, reason, missing attribute) -> fix`` in the IdP's words (:func:`fixer`)."""


class UnknownFilter(AppError):
    """A filter value outside its documented set."""

    status = 422
    code = "validation_error"


def classify(error_code: str | None, message: str | None) -> str:
    """The reason of a failure WorkOS or the IdP reported as *error_code* / *message*."""
    for pattern, reason in MESSAGE_REASONS:
        if message and pattern.search(message):
            return reason
    return WORKOS_ERROR_REASONS.get((error_code or "").strip().lower(), "unknown")


def refusal_reason(refusal: str) -> str:
    """The reason of one of our own refusals (:data:`OUR_REFUSALS`; ``unknown`` otherwise)."""
    return OUR_REFUSALS.get(refusal, "unknown")


def missing_attribute(message: str | None) -> str | None:
    """The attribute an error message names as missing, if it names one."""
    match = _ATTRIBUTE_NAME.search(message or "")
    return match.group(1).rstrip(".") if match else None


def clean_attributes(received: Mapping[str, Any] | None) -> dict[str, Any]:
    """What is kept of the attributes an IdP sent: at most :data:`MAX_ATTRIBUTES` names, values cut to
    :data:`MAX_VALUE_LENGTH`, and no attribute whose name may hold a credential (tokens, codes, raw SAML)."""
    kept: dict[str, Any] = {}
    for name, value in (received or {}).items():
        if len(kept) >= MAX_ATTRIBUTES:
            break
        key = str(name)[:128]
        if _SECRET_NAME.search(key) or value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        cut = [str(v)[:MAX_VALUE_LENGTH] for v in values[:MAX_ATTRIBUTES]]
        kept[key] = cut if isinstance(value, list | tuple) else cut[0]
    return kept


def redact(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes with every value replaced by :data:`REDACTED` (names and list lengths kept)."""
    return {k: [REDACTED] * len(v) if isinstance(v, list) else REDACTED for k, v in attributes.items()}


def fixer(plugins: Iterable[IdPPlugin]) -> Fixer:
    """The fix lookup over the loaded *plugins* (the generic fix for an attempt of no known plugin)."""
    by_name = {p.name: p for p in plugins}

    def fix(plugin: str | None, reason: str, attribute: str | None) -> str:
        found = by_name.get(plugin or "")
        if found is not None:
            return found.sign_in_fix(reason, attribute=attribute)
        return GENERIC_FIXES.get(reason, GENERIC_FIXES["unknown"])

    return fix


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One attempt as an admin sees it; ``attributes`` redacted unless ``attributes_revealed``."""

    id: int
    organization_id: str
    occurred_at: datetime
    kind: str
    outcome: str
    reason: str | None
    fix: str | None
    error_code: str | None
    error_message: str | None
    email: str | None
    connection_id: str | None
    idp_plugin: str | None
    sources: tuple[str, ...]
    missing_attribute: str | None
    attributes: dict[str, Any]
    attributes_revealed: bool
    ip_address: str | None


def view(row: SignInAttempt, fix: Fixer, *, reveal: bool = False) -> AttemptView:
    """The admin's view of *row*, its fix from *fix* (failures only)."""
    return AttemptView(
        id=row.id, organization_id=row.organization_id, occurred_at=row.occurred_at, kind=row.kind,
        outcome=row.outcome, reason=row.reason,
        fix=fix(row.idp_plugin, row.reason, row.attribute) if row.outcome == "failure" and row.reason else None,
        error_code=row.error_code, error_message=row.error_message, email=row.email,
        connection_id=row.connection_id, idp_plugin=row.idp_plugin, sources=tuple(row.sources.split(",")),
        missing_attribute=row.attribute, attributes=dict(row.attributes) if reveal else redact(row.attributes),
        attributes_revealed=reveal, ip_address=row.ip_address)


@dataclass(frozen=True, slots=True)
class Seen:
    """One sighting of an attempt (by our callback or by a WorkOS event), before it is stored or merged."""

    organization_id: str
    kind: str
    outcome: str
    reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    email: str | None = None
    connection_id: str | None = None
    workos_session_id: str | None = None
    idp_plugin: str | None = None
    attribute: str | None = None
    attributes: Mapping[str, Any] | None = None
    ip_address: str | None = None
    occurred_at: datetime | None = None


def _cut(value: str | None, length: int) -> str | None:
    return None if value is None else str(value)[:length]


def _apply(row: SignInAttempt, seen: Seen) -> None:
    """Fill what *row* lacks from *seen* (a merge never overwrites what the other sighting stored)."""
    for name, length in (("error_code", 64), ("error_message", 500), ("email", 320), ("connection_id", 64),
                         ("workos_session_id", 64), ("idp_plugin", 64), ("attribute", 128), ("ip_address", 64)):
        if getattr(row, name) is None and getattr(seen, name) is not None:
            setattr(row, name, _cut(getattr(seen, name), length))
    if seen.attributes and not row.attributes:
        row.attributes = clean_attributes(seen.attributes)
    if row.reason in (None, "unknown", "idp_error") and seen.reason not in (None, "unknown"):
        row.reason = seen.reason  # our own reading of a refusal is more precise than WorkOS's generic code
    if seen.kind == "test":
        row.kind = "test"


def _counterpart(session: Session, seen: Seen, source: str) -> SignInAttempt | None:
    """The stored sighting of the same attempt by the other *source*, not merged yet."""
    query = select(SignInAttempt).where(SignInAttempt.organization_id == seen.organization_id,
                                        SignInAttempt.sources == source)
    if seen.workos_session_id:
        # WorkOS opened a session: one attempt, whatever each side made of it (we may refuse what WorkOS let in).
        query = query.where(SignInAttempt.workos_session_id == seen.workos_session_id)
    elif seen.outcome == "success":
        return None
    else:
        query = query.where(SignInAttempt.outcome == "failure", SignInAttempt.workos_session_id.is_(None))
        at = seen.occurred_at or utcnow()
        query = query.where(SignInAttempt.occurred_at >= at - MATCH_WINDOW,
                            SignInAttempt.occurred_at <= at + MATCH_WINDOW,
                            SignInAttempt.connection_id == seen.connection_id,
                            SignInAttempt.error_code == seen.error_code)
        if seen.email:
            query = query.where((SignInAttempt.email == seen.email) | SignInAttempt.email.is_(None))
    return session.scalars(query.order_by(SignInAttempt.id).limit(1)).first()


def _store(session: Session, seen: Seen, source: str, event_id: str | None = None) -> SignInAttempt:
    other = "event" if source == "callback" else "callback"
    row = _counterpart(session, replace(seen, email=(seen.email or "").lower() or None), other)
    if row is None:
        row = SignInAttempt(organization_id=seen.organization_id, occurred_at=seen.occurred_at or utcnow(),
                            kind=seen.kind, outcome=seen.outcome, reason=seen.reason, sources=source,
                            event_id=event_id, attributes={})
        session.add(row)
    else:
        row.sources = "callback,event"
        row.event_id = row.event_id or event_id
        if source == "callback" and seen.outcome == "failure":  # our refusal of a sign-in WorkOS let through
            row.outcome, row.reason = "failure", seen.reason
    _apply(row, replace(seen, email=(seen.email or "").lower() or None))
    session.flush()
    return row


def record_callback(session: Session, seen: Seen) -> SignInAttempt:
    """Store what our callback saw of an attempt, merged into WorkOS's event of it when one is stored
    (flushed; the caller commits it with the audit event of the same fact)."""
    if seen.outcome not in OUTCOMES or seen.kind not in KINDS:
        raise ValueError(f"unknown outcome {seen.outcome!r} or kind {seen.kind!r}")
    return _store(session, seen, "callback")


SSO_EVENT_OUTCOMES = {"authentication.sso_succeeded": "success", "authentication.sso_failed": "failure",
                      "authentication.sso_timed_out": "failure"}
"""The ``authentication.*`` events that end an SSO attempt (``sso_started`` does not)."""


def record_event(session: Session, *, organization_id: str, event_id: str | None, event_type: str,
                 data: Mapping[str, Any], occurred_at: datetime, idp_plugin: str | None = None) -> SignInAttempt | None:
    """Store an ``authentication.sso_*`` event's attempt, merged into our callback's sighting of it; an event
    already stored (its id) or one that ends no attempt returns ``None``."""
    outcome = SSO_EVENT_OUTCOMES.get(event_type)
    if outcome is None:
        return None
    if event_id and session.scalar(select(SignInAttempt.id).where(SignInAttempt.organization_id == organization_id,
                                                                  SignInAttempt.event_id == event_id)) is not None:
        return None
    sso: dict[str, Any] = data["sso"] if isinstance(data.get("sso"), dict) else {}
    error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
    code = str(error["code"]) if error.get("code") else ("timed_out" if event_type.endswith("timed_out") else None)
    message = str(error["message"]) if error.get("message") else None
    reason = None if outcome == "success" else classify(code, message)
    seen = Seen(organization_id=organization_id, kind="sign_in", outcome=outcome, reason=reason,
                error_code=code, error_message=message, email=_str(data.get("email")),
                connection_id=_str(sso.get("connection_id")), workos_session_id=_str(sso.get("session_id")),
                idp_plugin=idp_plugin, attribute=missing_attribute(message) if reason == "missing_attribute" else None,
                ip_address=_str(data.get("ip_address")), occurred_at=occurred_at)
    return _store(session, seen, "event", event_id)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- reading -------------------------------------------------------------------------------------------------

PAGE_KEY = paging.key_kind(SignInAttempt.id)


def attempts_query(organization_id: str, *, reason: str | None = None, outcome: str | None = None,
                   email: str | None = None) -> Select[tuple[SignInAttempt]]:
    """The organization's attempts, filtered; raises :class:`UnknownFilter` for a reason or outcome outside
    :data:`SIGN_IN_REASONS` / :data:`OUTCOMES`."""
    if reason is not None and reason not in SIGN_IN_REASONS:
        raise UnknownFilter("Unknown reason.", details={"fields": {"reason": [f"one of {', '.join(SIGN_IN_REASONS)}"]}})
    if outcome is not None and outcome not in OUTCOMES:
        raise UnknownFilter("Unknown outcome.", details={"fields": {"outcome": ["success or failure"]}})
    query = select(SignInAttempt).where(SignInAttempt.organization_id == organization_id)
    if reason is not None:
        query = query.where(SignInAttempt.reason == reason)
    if outcome is not None:
        query = query.where(SignInAttempt.outcome == outcome)
    if email:
        query = query.where(SignInAttempt.email == email.strip().lower())
    return query


def attempts_page(session: Session, organization_id: str, page: paging.PageRequest, fix: Fixer, *,
                  reason: str | None = None, outcome: str | None = None, email: str | None = None,
                  reveal: Iterable[int] = ()) -> paging.Page[AttemptView]:
    """One page of the organization's attempts, newest first; attributes revealed for the ids in *reveal*, which
    the caller has audited with :func:`audit_reveal` in a POST (a read never reveals on its own)."""
    shown = set(reveal)
    query = attempts_query(organization_id, reason=reason, outcome=outcome, email=email)
    return paging.paginate(session, query, SignInAttempt.id, page,
                           lambda row: view(row, fix, reveal=row.id in shown), descending=True)


def reveal(session: Session, organization_id: str, attempt_id: int, fix: Fixer, cause: Cause) -> AttemptView | None:
    """The organization's attempt *attempt_id* with its attribute values shown, the reveal audited (caller
    commits); ``None`` for another organization's. A state change: only ever on a POST (CSRF for cookies)."""
    row = find(session, organization_id, attempt_id)
    if row is None:
        return None
    audit_reveal(session, organization_id, [row.id], cause)
    return view(row, fix, reveal=True)


def audit_reveal(session: Session, organization_id: str, attempt_ids: Iterable[int], cause: Cause) -> None:
    """Audit ``sign_in_attempts.attributes_revealed`` naming the attempts whose values were shown (caller
    commits)."""
    ids = sorted(set(attempt_ids))
    if ids:
        audit.record(session, action="sign_in_attempts.attributes_revealed", cause=cause,
                     organization_id=organization_id, target_type="sign_in_attempt",
                     target_id=str(ids[0]) if len(ids) == 1 else None, details={"attempt_ids": ids})


def find(session: Session, organization_id: str, attempt_id: int) -> SignInAttempt | None:
    """The organization's attempt *attempt_id* (``None`` for another organization's, or an id outside the
    column's range, which no attempt has: never a database error)."""
    if attempt_id <= 0 or not PAGE_KEY.holds(attempt_id):
        return None
    return session.scalar(select(SignInAttempt).where(SignInAttempt.organization_id == organization_id,
                                                      SignInAttempt.id == attempt_id))


def last_success(session: Session, organization_id: str) -> datetime | None:
    """When the organization's last successful SSO sign-in (not a test) happened, within the retention."""
    return session.scalar(select(func.max(SignInAttempt.occurred_at)).where(
        SignInAttempt.organization_id == organization_id, SignInAttempt.outcome == "success",
        SignInAttempt.kind == "sign_in"))


# --- the SSO wizard's test sign-in ---------------------------------------------------------------------------


def record_test_refusal(session: Session, *, organization_id: str, plugin: str, connection_id: str | None,
                        error: str, description: str | None, cause: Cause) -> SignInAttempt:
    """A test sign-in the IdP or WorkOS refused (the callback's ``error`` / ``error_description``): stored and
    audited ``sso.test_login`` (failure); the caller commits."""
    reason = classify(error, description)
    row = record_callback(session, Seen(
        organization_id=organization_id, kind="test", outcome="failure", reason=reason, error_code=error[:64],
        error_message=description, connection_id=connection_id, idp_plugin=plugin,
        attribute=missing_attribute(description) if reason == "missing_attribute" else None,
        ip_address=cause.request.ip_address))
    audit.record(session, action="sso.test_login", cause=cause, organization_id=organization_id,
                 outcome="failure", target_type="connection", target_id=connection_id,
                 details={"plugin": plugin, "error": error[:64], "reason": reason, "attempt_id": row.id})
    return row


def record_test_result(session: Session, *, organization_id: str, plugin: str, connection_id: str | None,
                       profile: Mapping[str, Any], missing: str | None, role: str | None,
                       cause: Cause) -> SignInAttempt:
    """A test sign-in whose profile we evaluated (audited ``sso.test_login`` by ``sso_setup``): a failure when a
    required attribute is *missing* (the IdP's name for it) or no *role* would be granted."""
    reason = "missing_attribute" if missing else "no_role" if role is None else None
    return record_callback(session, Seen(
        organization_id=organization_id, kind="test", outcome="failure" if reason else "success", reason=reason,
        email=_str(profile.get("email")), connection_id=connection_id, idp_plugin=plugin, attribute=missing,
        attributes=profile, ip_address=cause.request.ip_address))
