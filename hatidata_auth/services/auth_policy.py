"""Which authentication an organization accepts for a session in it, checked wherever a session is made.

A session remembers how WorkOS authenticated it (``Authentication``: the method, and for SSO the organization and
connection that vouched). An organization accepts it when

- it does not enforce SSO, or the method is SSO through *its own* connection; and
- the method is one it allows (``Organization.auth_methods``; ``None`` allows every method); and
- the method is not SSO through an organization's connection for an email on a domain another organization
  verified; and
- SSO through another organization A's connection (or an unknown one) is accepted only when A verified the
  email's domain: A is then the authority for that address. An organization's identity sources otherwise speak
  only for that organization (an IdP can assert any email).

The callback, the refresh and the organization switch all ask :func:`refusal` (see ``docs/auth.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

from ..causes import NO_REQUEST, Actor, Cause, RequestInfo
from ..errors import AppError, ServiceUnavailable
from ..models import SIGN_IN_METHODS, AuthSession, Organization, User
from ..workos import WorkOSClient, WorkOSFailure, translate_errors
from . import audit, break_glass, domains
from .organizations import ensure_organization

log = logging.getLogger(__name__)

# The sign-in's own event is searched oldest first from just before the token was issued, in the organization
# it landed in: newer sign-ins (a burst, any tenant's) cannot push it out of reach. Bounded: pages of 100.
EVENT_SKEW_SECONDS = 30
EVENT_PAGES = 10


class SsoRequired(AppError):
    """The organization does not accept how this session was authenticated: sign in through its own login."""

    status = 409
    code = "sso_required"


@dataclass(frozen=True, slots=True)
class Authentication:
    """How WorkOS authenticated a session: ``method`` is WorkOS's ``authentication_method`` lower-cased
    (``sso``, ``password``, ``magicauth``, ...); ``organization_id`` (ours) and ``connection_id`` (WorkOS's)
    name the SSO connection that vouched, ``None`` when not SSO or not reported."""

    method: str
    organization_id: str | None = None
    connection_id: str | None = None

    @classmethod
    def of(cls, record: AuthSession) -> Authentication:
        """The authentication a session record stored."""
        return cls(record.auth_method, record.auth_organization_id, record.auth_connection_id)


def _sso_event(client: WorkOSClient, workos_session_id: str, workos_organization_id: str | None,
               since: datetime) -> Any:
    start = since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    events = client.events.list_events(events=["authentication.sso_succeeded"], range_start=start, limit=100,
                                       order="asc", organization_id=workos_organization_id).auto_paging_iter()
    for event in islice(events, EVENT_PAGES * 100):
        sso = getattr(getattr(event, "data", None), "sso", None)
        if sso is not None and getattr(sso, "session_id", None) == workos_session_id:
            return sso
    log.warning("the authentication event of session %s is not within %d events", workos_session_id,
                EVENT_PAGES * 100)
    return None


def authentication_of(db: Session, client: WorkOSClient, *, method: str | None, workos_session_id: str,
                      workos_organization_id: str | None = None, issued_at: float | None = None) -> Authentication:
    """How WorkOS authenticated the session *workos_session_id*, from the authenticate response's *method* and,
    for SSO, the ``authentication.sso_succeeded`` event naming its organization and connection, searched in
    *workos_organization_id* (where the sign-in landed) from *issued_at* (the token's ``iat``, epoch seconds;
    default now) on. When WorkOS has no such event, both stay ``None`` (every check treats the connection as
    foreign); when WorkOS cannot answer, :class:`~hatidata_auth.errors.ServiceUnavailable` (503: retry the
    sign-in) rather than a refusal.
    """
    name = (method or "unknown").lower()[:32]
    if name != "sso":
        return Authentication(name)
    since = datetime.fromtimestamp(issued_at, UTC) if issued_at is not None else datetime.now(UTC)
    try:
        with translate_errors():
            sso = _sso_event(client, workos_session_id, workos_organization_id,
                             since - timedelta(seconds=EVENT_SKEW_SECONDS))
    except WorkOSFailure as exc:
        log.warning("could not read the authentication event of session %s: %s", workos_session_id, exc)
        raise ServiceUnavailable("WorkOS could not confirm how you signed in; retry the sign-in shortly.",
                                 code="workos_unavailable", headers={"Retry-After": "5"}) from exc
    if sso is None:
        return Authentication(name)
    workos_org = getattr(sso, "organization_id", None)
    org_id = ensure_organization(db, client, str(workos_org)).id if workos_org else None
    return Authentication(name, org_id, getattr(sso, "connection_id", None))


def method_family(method: str) -> str:
    """The :data:`~hatidata_auth.models.SIGN_IN_METHODS` entry of a session's method (``googleoauth`` ->
    ``oauth``); a method outside them (``impersonation``, ``unknown``...) stands for itself."""
    return "oauth" if method.endswith("oauth") else method


def allowed_methods(org: Organization) -> list[str]:
    """The sign-in methods *org* accepts: SSO only when it enforces SSO, else its setting (default: all)."""
    if org.sso_enforced:
        return ["sso"]
    return list(org.auth_methods) if org.auth_methods is not None else list(SIGN_IN_METHODS)


def own_sso(org: Organization, auth: Authentication) -> bool:
    """Whether *auth* is SSO through *org*'s own current connection."""
    return auth.method == "sso" and auth.organization_id == org.id and auth.connection_id is not None \
        and auth.connection_id == org.connection_id


def refusal(db: Session, org: Organization, auth: Authentication, email: str | None) -> str | None:
    """Why *org* does not accept a session authenticated as *auth* for *email* (``None``: accepted).

    A break-glass member's non-SSO method is accepted while SSO is the only way in
    (:func:`~hatidata_auth.services.sso_enforcement.sso_only`), whatever the allowed methods;
    ``sso_enforced``: the organization enforces SSO and this is not SSO through its own connection;
    ``foreign_domain``: SSO vouched by an organization for an email on a domain another organization verified;
    ``foreign_identity_source``: SSO vouched by another (or an unknown) organization that has not verified the
    email's domain, so is no authority for that address anywhere but in itself; ``method_not_allowed``: the
    organization's settings do not allow the method. Methods where WorkOS itself verified the email (password,
    magic code, OAuth) are accepted when allowed and SSO is not enforced.
    """
    if auth.method != "sso" and break_glass.exempt(db, org, email) is not None:
        # While SSO is the only way in (enforced, or SSO the only allowed method), a break-glass member
        # (services/break_glass.py) may use a non-SSO method, one where WorkOS itself verified the email; SSO
        # vouched by another connection stays refused below (an IdP can assert any email).
        return None
    if org.sso_enforced and not own_sso(org, auth):
        return "sso_enforced"
    if org.auth_methods is not None and method_family(auth.method) not in org.auth_methods:
        return "method_not_allowed"
    if auth.method != "sso":
        return None
    owner = domains.verified_owner(db, email)
    if owner is not None and owner != auth.organization_id:
        return "foreign_domain"
    if auth.organization_id != org.id and (auth.organization_id is None or owner != auth.organization_id):
        return "foreign_identity_source"
    return None


def sign_in_needed(db: Session, record: AuthSession | None, email: str | None,
                   organizations: list[Organization]) -> dict[str, str | None]:
    """For each of *organizations* (by our id): why it would refuse the session *record* (see :func:`refusal`;
    ``None``: a switch there is accepted). The session's own organization is never refused here."""
    auth = Authentication.of(record) if record is not None else Authentication("unknown")
    current = record.organization_id if record is not None else None
    return {org.id: None if org.id == current else refusal(db, org, auth, email) for org in organizations}


def login_url(organization_id: str) -> str:
    """Where a browser signs in to an organization through its own login."""
    return f"/auth/login?organization_id={organization_id}"


MESSAGES = {
    "sso_enforced": "{name} requires signing in through its own SSO connection.",
    "foreign_domain": "{name} does not accept this sign-in: your email's domain belongs to another organization, "
                      "whose own sign-in you must use.",
    "foreign_identity_source": "{name} does not accept a sign-in vouched for by another organization's identity "
                               "provider for this email; sign in to {name} itself.",
    "method_not_allowed": "{name} does not allow this sign-in method; sign in with one it allows.",
}


def refused(org: Organization, reason: str) -> SsoRequired:
    """The error telling the user to sign in through *org*'s own login."""
    details: dict[str, Any] = {"reason": reason, "organization_id": org.id, "login_url": login_url(org.id)}
    if reason == "method_not_allowed":
        details["allowed_methods"] = allowed_methods(org)
    return SsoRequired(MESSAGES[reason].format(name=org.name), details=details)


def check(db: Session, org: Organization, auth: Authentication, *, email: str | None, cause: Cause,
          action: str, session_id: str | None = None, session_started: datetime | None = None) -> None:
    """Raise :class:`SsoRequired` (after auditing ``auth.policy_refused`` in *org*; the caller commits) when *org*
    does not accept *auth*; *action* names where (``login``, ``refresh``, ``switch``). A sign-in or switch a
    break-glass exemption lets through is audited ``auth.break_glass_used`` and raises an alert; so is a refresh
    of the session *session_id* (created at *session_started*) whose use was not audited yet."""
    reason = refusal(db, org, auth, email)
    if reason is None:
        member = break_glass.exempt(db, org, email) if auth.method != "sso" else None
        if member is not None and (action != "refresh" or session_id is None or session_started is None
                                   or not break_glass.use_audited(db, org, member, session_id=session_id,
                                                                  since=session_started)):
            break_glass.record_use(db, org, member, email=email, method=auth.method, action=action,
                                   cause=cause, session_id=session_id)
        return
    audit.record(db, action="auth.policy_refused", cause=cause, organization_id=org.id, outcome="failure",
                 target_type="session" if session_id else None, target_id=session_id,
                 details={"reason": reason, "at": action, "auth_method": auth.method,
                          "auth_organization_id": auth.organization_id, "auth_connection_id": auth.connection_id})
    raise refused(org, reason)


def check_session(db: Session, record: AuthSession, *, action: str, request: RequestInfo = NO_REQUEST,
                  organization: Organization | None = None) -> None:
    """:func:`check` for a stored session in its organization (or *organization*, the switch target)."""
    org = organization or db.get(Organization, record.organization_id)
    user = db.get(User, record.user_id)
    if org is None or user is None:
        raise AppError("The session has ended; sign in again.", status=401, code="unauthenticated")
    check(db, org, Authentication.of(record), email=user.email, cause=Cause.by(Actor("user", user.id, user.email),
                                                                               request),
          action=action, session_id=record.id, session_started=record.created_at)
