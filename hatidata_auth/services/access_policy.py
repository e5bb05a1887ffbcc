"""An organization's access policy: how long its sessions last, how they may sign in, where they may come from.

The policy is one frozen :class:`AccessPolicy` per organization, read from its row (:func:`load_policy`), kept in
every process's memory by the :class:`~hatidata_auth.services.introspection.Introspector` and evicted everywhere
when it changes (:func:`update_policy` queues the ``"policy"`` invalidation for its commit). The per-request checks
(:func:`session_refusal`, :func:`api_key_refusal`) are pure: no database, no network.

- ``idle_timeout``: a session (not remembered) not used for this long has ended. It is the sliding lifetime
  (``Organization.session_active_ttl``), measured from the last-seen time the request's cached status holds, which
  is written at most once per ``HATIDATA_LAST_SEEN_INTERVAL`` (see ``docs/policy.md`` for the precision).
- ``absolute_lifetime``: a session has ended this long after it was created, whatever its refreshes.
- ``remembered_lifetime``: the fixed lifetime of a remembered session (``Organization.session_remembered_ttl``).
- ``allowed_methods``: ``Organization.auth_methods`` (checked at sign-in, refresh and switch by ``auth_policy``).
- ``ip_allowlist``: CIDR networks (IPv4 and IPv6) a session's requests may come from; with
  ``ip_allowlist_applies_to_api_keys`` API keys too, unless the key has its own list, which then applies alone.
- ``step_up_window``: stored and returned (its enforcement is issue #16, item 2).
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import InstanceState, Session

from ..causes import Cause
from ..errors import AppError
from ..models import SIGN_IN_METHODS, ApiKey, AuthSession, Organization, utcnow
from ..unit_of_work import INVALIDATOR, AppSession, invalidate_after_commit
from . import audit, sso_enforcement
from .auth_policy import allowed_methods, method_family
from .tenant_admin import NotFound, check_auth_methods, get_organization

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_STEP_UP_WINDOW = 600
MAX_ALLOWLIST = 100
BOUNDS: Mapping[str, tuple[int, int]] = {
    "idle_timeout": (300, 30 * 24 * 3600),
    "absolute_lifetime": (300, 365 * 24 * 3600),
    "remembered_lifetime": (300, 365 * 24 * 3600),
    "step_up_window": (60, 24 * 3600),
}
"""Seconds each duration may be set to, inclusive."""
FIELDS = (*BOUNDS, "allowed_methods", "ip_allowlist", "ip_allowlist_applies_to_api_keys")
# Policy field -> Organization column.
_COLUMNS = {"idle_timeout": "session_active_ttl", "absolute_lifetime": "session_absolute_ttl",
            "remembered_lifetime": "session_remembered_ttl", "allowed_methods": "auth_methods",
            "ip_allowlist": "ip_allowlist", "ip_allowlist_applies_to_api_keys": "ip_allowlist_api_keys",
            "step_up_window": "step_up_window"}


class PolicyLockout(AppError):
    """The change would end the caller's own access."""

    status = 409
    code = "policy_lockout"


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """One organization's policy as requests check it (durations in seconds, defaults resolved)."""

    organization_id: str
    idle_timeout: int
    absolute_lifetime: int | None
    remembered_lifetime: int
    allowed_methods: tuple[str, ...]
    ip_allowlist: tuple[Network, ...]
    ip_allowlist_applies_to_api_keys: bool
    step_up_window: int
    sso_enforced: bool = False

    def to_json(self) -> dict[str, Any]:
        """The API's view (networks as normalised CIDR strings)."""
        return {"organization_id": self.organization_id, "idle_timeout": self.idle_timeout,
                "absolute_lifetime": self.absolute_lifetime, "remembered_lifetime": self.remembered_lifetime,
                "allowed_methods": list(self.allowed_methods), "sso_enforced": self.sso_enforced,
                "ip_allowlist": [str(n) for n in self.ip_allowlist],
                "ip_allowlist_applies_to_api_keys": self.ip_allowlist_applies_to_api_keys,
                "step_up_window": self.step_up_window}


def _invalid(field: str, message: str) -> AppError:
    return AppError("Invalid access policy.", status=422, code="validation_error",
                    details={"fields": {field: [message]}})


def parse_allowlist(values: Iterable[Any] | None, field: str = "ip_allowlist") -> list[str] | None:
    """CIDR strings (IPv4 or IPv6; a bare address is its /32 or /128) normalised by :mod:`ipaddress`, duplicates
    dropped, in order; ``None`` or empty: no restriction (``None``). A 422 naming *field* otherwise."""
    if values is None:
        return None
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise _invalid(field, "A list of CIDR networks, or null.")
    out: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            raise _invalid(field, f"Not a CIDR network: {str(value)[:64]!r}.")
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise _invalid(field, f"Not a CIDR network: {value[:64]!r}.") from None
        if str(network) not in out:
            out.append(str(network))
    if len(out) > MAX_ALLOWLIST:
        raise _invalid(field, f"At most {MAX_ALLOWLIST} networks.")
    return out or None


@functools.lru_cache(maxsize=4096)
def networks(values: tuple[str, ...] | None) -> tuple[Network, ...]:
    """Stored CIDR strings as networks (validated when stored), memoised: an API key's list is parsed once."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values or ())


def address_allowed(address: str | None, allowlist: tuple[Network, ...]) -> bool:
    """Whether *address* is in one of the networks (an empty list allows every address; an unknown or
    unparsable address none). An IPv4-mapped IPv6 address counts as its IPv4 address."""
    if not allowlist:
        return True
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in allowlist)


def policy_of(org: Organization, *, default_idle: int, default_remembered: int) -> AccessPolicy:
    """The policy stored on *org*, with the deployment's defaults where it sets none."""
    return AccessPolicy(
        organization_id=org.id, idle_timeout=int(org.session_active_ttl or default_idle),
        absolute_lifetime=org.session_absolute_ttl, remembered_lifetime=int(org.session_remembered_ttl
                                                                            or default_remembered),
        allowed_methods=tuple(allowed_methods(org)), ip_allowlist=networks(tuple(org.ip_allowlist or ())),
        ip_allowlist_applies_to_api_keys=bool(org.ip_allowlist_api_keys),
        step_up_window=int(org.step_up_window or DEFAULT_STEP_UP_WINDOW), sso_enforced=bool(org.sso_enforced))


def load_policy(db: Session, organization_id: str, *, default_idle: int, default_remembered: int
                ) -> AccessPolicy | None:
    """The policy of an organization (``None``: no such organization)."""
    org = db.get(Organization, organization_id)
    if org is None:
        return None
    return policy_of(org, default_idle=default_idle, default_remembered=default_remembered)


# The columns a policy is read from (and the organization's SSO enforcement, which narrows its methods).
POLICY_COLUMNS = frozenset({*_COLUMNS.values(), "sso_enforced"})


@event.listens_for(AppSession, "before_flush")
def _evict_changed_policies(session: Session, _context: Any, _instances: Any) -> None:
    """Whoever changes a policy column (this module, the settings API, the SSO setup, a WorkOS event), every
    process forgets that organization's cached policy when the change commits."""
    if INVALIDATOR not in session.info:
        return
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, Organization):
            state: InstanceState[Organization] = inspect(obj)
            if obj in session.deleted or any(state.attrs[c].history.has_changes() for c in POLICY_COLUMNS):
                invalidate_after_commit(session, "policy", obj.id)


def get_policy(db: Session, organization_id: str, *, default_idle: int, default_remembered: int) -> AccessPolicy:
    """An active organization's policy, or :class:`~.tenant_admin.NotFound`."""
    return policy_of(get_organization(db, organization_id), default_idle=default_idle,
                     default_remembered=default_remembered)


# --- the checks of every request --------------------------------------------------------------------------------


def session_refusal(policy: AccessPolicy, *, created_at: float | None, last_seen_at: float | None,
                    remembered: bool, address: str | None, now: float,
                    authenticated_at: float | None = None) -> str | None:
    """Why *policy* ends or refuses this session request (``None``: allowed): ``session_expired`` (past the
    absolute lifetime), ``session_idle_timeout`` (not remembered and unused for the idle timeout, from its last
    seen time, else its creation) or ``ip_not_allowed``.

    The absolute lifetime counts from the sign-in: the earlier of the session's creation and *authenticated_at*
    (the token's ``auth_time``, AuthKit's last active authentication). A login AuthKit passed straight through
    creates a new session but no new authentication, so it never restarts the lifetime."""
    started = min((t for t in (created_at, authenticated_at) if t is not None), default=None)
    if policy.absolute_lifetime is not None and started is not None and now - started >= policy.absolute_lifetime:
        return "session_expired"
    last = last_seen_at or created_at
    if not remembered and last is not None and now - last >= policy.idle_timeout:
        return "session_idle_timeout"
    if not address_allowed(address, policy.ip_allowlist):
        return "ip_not_allowed"
    return None


def session_allowed_until(policy: AccessPolicy, *, created_at: float | None, last_seen_at: float | None,
                          remembered: bool, authenticated_at: float | None = None) -> float:
    """The instant (epoch seconds) from which :func:`session_refusal`'s rules of time (the absolute lifetime, the
    idle timeout) refuse this session, the same arguments otherwise: before it, they refuse it at no instant at
    which they did not refuse it already; ``math.inf`` when neither applies."""
    ends = []
    started = min((t for t in (created_at, authenticated_at) if t is not None), default=None)
    if policy.absolute_lifetime is not None and started is not None:
        ends.append(started + policy.absolute_lifetime)
    last = last_seen_at or created_at
    if not remembered and last is not None:
        ends.append(last + policy.idle_timeout)
    return min(ends, default=math.inf)


def api_key_refusal(policy: AccessPolicy, key_allowlist: tuple[Network, ...], address: str | None) -> str | None:
    """``ip_not_allowed`` when *address* is outside the key's own list, or (the key having none and the
    organization applying its list to keys) outside the organization's; else ``None``."""
    if key_allowlist:
        return None if address_allowed(address, key_allowlist) else "ip_not_allowed"
    if policy.ip_allowlist_applies_to_api_keys and not address_allowed(address, policy.ip_allowlist):
        return "ip_not_allowed"
    return None


# --- changes ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks for a change, to keep them from locking themselves out: their address, and their session's id
    (ours) or their API key's id."""

    address: str | None
    session_id: str | None = None
    api_key_id: str | None = None


def _validated(db: Session, org: Organization, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Column -> value for *changes* (policy field -> value); a 422 naming the field at fault; 409
    ``sso_enforcement_unverified`` when ``allowed_methods`` ``["sso"]`` would make SSO the only way in unproved."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise AppError("Unknown policy fields.", status=422, code="validation_error",
                       details={"fields": {k: ["Unknown field."] for k in unknown}})
    columns: dict[str, Any] = {}
    for name, (low, high) in BOUNDS.items():
        if name not in changes:
            continue
        value = changes[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise _invalid(name, f"Whole seconds from {low} to {high}, or null for the default.")
        columns[_COLUMNS[name]] = value
    if "ip_allowlist" in changes:
        columns["ip_allowlist"] = parse_allowlist(changes["ip_allowlist"])
    if "ip_allowlist_applies_to_api_keys" in changes:
        if not isinstance(changes["ip_allowlist_applies_to_api_keys"], bool):
            raise _invalid("ip_allowlist_applies_to_api_keys", "true or false.")
        columns["ip_allowlist_api_keys"] = changes["ip_allowlist_applies_to_api_keys"]
    if "allowed_methods" in changes:
        methods = {"auth_methods": changes["allowed_methods"]}
        try:
            check_auth_methods(org, methods)
        except AppError as exc:
            raise _invalid("allowed_methods", str((exc.details or {}).get("fields", {}).get("auth_methods", [
                f"A non-empty list of: {', '.join(SIGN_IN_METHODS)}, or null."])[0])) from None
        columns["auth_methods"] = methods["auth_methods"]
        sso_enforcement.ensure_can_change(db, org, {"auth_methods": columns["auth_methods"]})
    return columns


def _caller_method(db: Session, organization_id: str, caller: Caller) -> str | None:
    """The sign-in method family of the caller's own session here (``None``: an API key, or no such session)."""
    record = db.get(AuthSession, caller.session_id) if caller.session_id else None
    if record is None or record.organization_id != organization_id:
        return None
    return method_family(record.auth_method)


def _guard_lockout(after: AccessPolicy, caller: Caller, method: str | None) -> None:
    """Refuse a policy that would end the caller's own access (409 ``policy_lockout``, explained)."""
    binds_caller = caller.api_key_id is None or after.ip_allowlist_applies_to_api_keys
    if binds_caller and not address_allowed(caller.address, after.ip_allowlist):
        raise PolicyLockout(
            f"The allowlist does not include your own address ({caller.address}): you would lose access. "
            "Add your address's network first, or make the change from an allowed address.",
            details={"field": "ip_allowlist", "your_address": caller.address})
    if method is not None and method not in after.allowed_methods:
        raise PolicyLockout(
            f"Your own session signed in with {method!r}, which the new allowed methods exclude: you would "
            "lose access at its next refresh. Sign in with an allowed method first.",
            details={"field": "allowed_methods", "your_method": method})


def update_policy(db: Session, *, organization_id: str, changes: Mapping[str, Any], caller: Caller, cause: Cause,
                  default_idle: int, default_remembered: int) -> AccessPolicy:
    """Apply *changes* (policy fields) to the organization's policy: validated (422 naming the field), refused
    when it would lock the caller out (409 ``policy_lockout``), audited ``organization.policy_updated`` with the
    changed fields' before and after, and evicted from every process's memory once committed."""
    org = get_organization(db, organization_id)
    columns = _validated(db, org, changes)
    fields_of = {column: name for name, column in _COLUMNS.items()}
    before = policy_of(org, default_idle=default_idle, default_remembered=default_remembered).to_json()
    diff = {column: value for column, value in columns.items() if getattr(org, column) != value}
    if not diff:
        return policy_of(org, default_idle=default_idle, default_remembered=default_remembered)
    method = _caller_method(db, org.id, caller)
    stored = {column: getattr(org, column) for column in diff}
    with db.no_autoflush:
        for column, value in diff.items():
            setattr(org, column, value)
        after_policy = policy_of(org, default_idle=default_idle, default_remembered=default_remembered)
        try:
            _guard_lockout(after_policy, caller, method)
        except PolicyLockout:
            for column, value in stored.items():
                setattr(org, column, value)
            raise
    after = after_policy.to_json()
    org.updated_at = utcnow()
    changed = {fields_of[c]: {"from": before[fields_of[c]], "to": after[fields_of[c]]} for c in diff}
    audit.record(db, action="organization.policy_updated", cause=cause, organization_id=org.id,
                 target_type="organization", target_id=org.id, details={"changes": changed})
    db.flush()
    return after_policy


def set_key_allowlist(db: Session, *, organization_id: str, key_id: str, allowlist: Iterable[Any] | None,
                      caller: Caller, cause: Cause) -> list[str] | None:
    """Set (or with ``None`` clear) an API key's own allowlist; audited ``api_key.ip_allowlist_updated``; 409
    ``policy_lockout`` when the caller is that key and the list leaves out the caller's address."""
    key = db.get(ApiKey, key_id)
    if key is None or key.organization_id != organization_id:
        raise NotFound("No such API key.")
    value = parse_allowlist(allowlist)
    if caller.api_key_id == key.id and not address_allowed(caller.address, networks(tuple(value or ()))):
        raise PolicyLockout(f"The list does not include the address this key calls from ({caller.address}): the "
                            "key would lose access.", details={"field": "ip_allowlist",
                                                                "your_address": caller.address})
    if key.ip_allowlist != value:
        audit.record(db, action="api_key.ip_allowlist_updated", cause=cause, organization_id=organization_id,
                     target_type="api_key", target_id=key.id,
                     details={"from": key.ip_allowlist, "to": value})
        key.ip_allowlist = value
        db.flush()
        invalidate_after_commit(db, "api_key", key.id, key.key_hash)
    return value
