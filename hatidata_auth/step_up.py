"""Step-up re-authentication: sensitive operations need a sign-in within the organization's ``step_up_window``.

The one declaration of what is sensitive is :func:`is_sensitive`; the guards of :mod:`.identity`
(``require_permission``, ``require_role``, ``browser_session_required``, ``login_required``) apply it to every
route after their own checks, so a new route in the class cannot forget it. A too-old sign-in gets 401
``reauthentication_required`` with ``details.reauthenticate_url`` (an HTML ``GET`` is redirected there instead).

The authentication time is the access token's ``auth_time`` (WorkOS: when the user last *actively* authenticated;
refreshes keep it), read from the verified claims: no SQL, and a re-authentication's new token is what the very next
request of any worker sees. API keys cannot re-authenticate: a key may do what its scopes allow, because creating or
rotating a key with an admin scope itself needed a recent sign-in (:func:`require_for_scopes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import request

from .errors import AppError
from .roles import ALL_PERMISSIONS, ROLE_PERMISSIONS, Role
from .urls import public_base

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_STEP_UP_WINDOW = 600

SENSITIVE_PERMISSIONS: frozenset[str] = frozenset({"sso:manage", "members:write", "keys:manage", "audit:manage"})
"""A request that changes something and needs one of these (SSO and organization settings, access policy, role
mappings, member roles and removal, any member's keys, per-key allowlists, audit streams) is sensitive."""

SENSITIVE_BLUEPRINTS: frozenset[str] = frozenset({"sso_wizard", "policy_page"})
"""Every route (pages included) of the SSO setup wizard and the access-policy page is sensitive."""

SENSITIVE_WRITE_BLUEPRINTS: frozenset[str] = frozenset({"audit-streams"})
"""Every change (any method but the safe ones) of these is sensitive: an audit stream receives the whole audit log,
so creating, re-pointing, re-keying, enabling, retrying or deleting one needs a recent sign-in."""

SSO_SETUP_PREFIX = "/admin/sso"
PLUGIN_BLUEPRINT_PREFIX = "idp_"
"""SSO setup is sensitive whoever registers the route: every route under ``/admin/sso`` and every route of an IdP
plugin's blueprint (``idp_<name>``, a name the registry enforces, whatever its URL prefix)."""

READ_ONLY_BLUEPRINTS: frozenset[str] = frozenset({"sso_sign_ins"})
"""Under ``/admin/sso`` but not setup: the sign-in diagnostics list (only its reveal is sensitive, above)."""

SENSITIVE_ENDPOINTS: frozenset[str] = frozenset({"audit-events.export", "audit-exports.start_export",
                                                 "audit-exports.download_export", "sso_sign_ins.reveal"})
"""Sensitive whatever their method: the audit export (synchronous, or a job started and its file downloaded),
revealing a sign-in attempt's details."""

ADMIN_SCOPES: frozenset[str] = ALL_PERMISSIONS - ROLE_PERMISSIONS[Role.DEVELOPER.value]
"""Scopes only admins hold: creating or rotating a key that carries one is sensitive."""

REAUTH_MAX_AGE = 0
"""The ``max_age`` a re-authentication asks AuthKit for: the token's ``auth_time`` is already AuthKit's last active
authentication, known too old, so only a fresh one helps."""


class ReauthenticationRequired(AppError):
    """The caller's last sign-in is older than the organization's step-up window."""

    status = 401
    code = "reauthentication_required"


def is_sensitive(endpoint: str | None, method: str, permissions: Iterable[str] = (), rule: str | None = None
                 ) -> bool:
    """Whether a request to *endpoint* (URL rule *rule*) with *method*, guarded by *permissions*, needs a recent
    sign-in."""
    if not endpoint:
        return False
    blueprint = endpoint.rpartition(".")[0]
    if endpoint in SENSITIVE_ENDPOINTS or blueprint in SENSITIVE_BLUEPRINTS \
            or blueprint.startswith(PLUGIN_BLUEPRINT_PREFIX):
        return True
    if rule is not None and blueprint not in READ_ONLY_BLUEPRINTS \
            and (rule == SSO_SETUP_PREFIX or rule.startswith(SSO_SETUP_PREFIX + "/")):
        return True
    if method.upper() in SAFE_METHODS:
        return False
    return blueprint in SENSITIVE_WRITE_BLUEPRINTS or not SENSITIVE_PERMISSIONS.isdisjoint(permissions)


def has_admin_scope(scopes: Iterable[str]) -> bool:
    """Whether *scopes* include a scope only admins hold."""
    return not ADMIN_SCOPES.isdisjoint(scopes)


def reauthenticate_url(organization_id: str, return_to: str) -> str:
    """The relative URL that re-authenticates through the organization's own method and comes back to
    *return_to* (``/auth/login`` checks it: no open redirect)."""
    return "/auth/login?" + urlencode({"organization_id": organization_id, "max_age": REAUTH_MAX_AGE,
                                       "return_to": return_to})


def coming_back_to() -> str:
    """Where this request's re-authentication returns: the page (a ``GET``), the page of ours a form was posted
    from, else home (API callers' pages pass their own)."""
    if request.path.startswith("/api/"):
        return "/"
    if request.method == "GET":
        return request.full_path.rstrip("?") if request.query_string else request.path
    referrer = urlsplit(request.referrer or "")
    if referrer.scheme and f"{referrer.scheme}://{referrer.netloc}" == public_base():
        return referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return "/"


def check(*, authenticated_at: float | None, window: int, now: float, organization_id: str,
          return_to: str) -> None:
    """Raise :class:`ReauthenticationRequired` unless the sign-in at *authenticated_at* is within *window*."""
    if authenticated_at is not None and now - authenticated_at <= window:
        return
    details: dict[str, Any] = {"reauthenticate_url": reauthenticate_url(organization_id, return_to),
                               "authenticated_at": int(authenticated_at) if authenticated_at is not None else None,
                               "step_up_window": window}
    raise ReauthenticationRequired("This operation needs a recent sign-in; sign in again to continue.",
                                   details=details)
