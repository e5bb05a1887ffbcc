"""Sign-in domain logic of the hosted pages: who may sign in, codes, JIT users and SSO profiles (the code
exchange, tokens and sessions are in :mod:`.sessions`)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import authkit, idp, idp_failures, serialize, signing_certs
from .errors import ApiError
from .ids import iso, new_id, token
from .state import Emulator
from .store import AuthRequest, Entity, Store


# ---- who may sign in --------------------------------------------------------------------------------
def login_candidates(store: Store, org_id: str | None) -> list[dict[str, Any]]:
    """Identities the simulated IdP of ``org_id`` offers (active directory users and active members)."""
    out: dict[str, dict[str, Any]] = {}
    if org_id is None:
        for person in store.users.values():
            out[person["email"].lower()] = _candidate(person["email"], person.get("first_name"),
                                                      person.get("last_name"), person["id"])
        return sorted(out.values(), key=lambda c: c["email"])
    dir_ids = {d["id"] for d in store.org_directories(org_id)}
    blocked: set[str] = set()
    for du in store.directory_users.values():
        if du["directory_id"] not in dir_ids or not du.get("email"):
            continue
        email = du["email"].lower()
        if du["state"] != "active":
            blocked.add(email)
            continue
        um = store.user_by_email(email)
        c = _candidate(du["email"], du.get("first_name"), du.get("last_name"), um["id"] if um else None)
        c["directory_user_id"] = du["id"]
        c["groups"] = [g["name"] for g in store.groups_of(du["id"])]
        out[email] = c
    for m in store.memberships.values():
        if m["organization_id"] != org_id or m["status"] != "active":
            continue
        u = store.users.get(m["user_id"])
        if u is None or u["email"].lower() in out or u["email"].lower() in blocked:
            continue
        c = _candidate(u["email"], u.get("first_name"), u.get("last_name"), u["id"])
        c["role"] = m["role_slug"]
        out[u["email"].lower()] = c
    return sorted(out.values(), key=lambda c: c["email"])


def _candidate(email: str, first: str | None, last: str | None, user_id: str | None) -> dict[str, Any]:
    name = " ".join(x for x in (first, last) if x) or email
    return {"email": email, "name": name, "user_id": user_id, "groups": []}


def find_candidate(store: Store, org_id: str | None, email: str) -> dict[str, Any] | None:
    """The candidate with this email, if the IdP of ``org_id`` would let them sign in."""
    email = email.strip().lower()
    for c in login_candidates(store, org_id):
        if c["email"].lower() == email:
            return c
    return None


def orgs_for_email(store: Store, email: str) -> list[str]:
    """Home-realm discovery: the organizations an email can sign in to (domain owner first)."""
    email = email.strip().lower()
    orgs: list[str] = []
    domain = email.rpartition("@")[2]
    owner = store.org_for_domain(domain) if domain else None
    if owner is not None:
        orgs.append(owner["id"])
    u = store.user_by_email(email)
    if u is not None:
        orgs.extend(m["organization_id"] for m in store.user_memberships(u["id"]) if m["organization_id"] not in orgs)
    for du in store.directory_users.values():
        if (du.get("email") or "").lower() == email and du["organization_id"] not in orgs:
            orgs.append(du["organization_id"])
    return orgs


def request_org(store: Store, areq: AuthRequest) -> str | None:
    """The organization an authorization request is pinned to (via organization or connection)."""
    if areq.organization_id:
        return areq.organization_id
    if areq.connection_id:
        conn = store.connections.get(areq.connection_id)
        return conn.get("organization_id") if conn else None
    return None


# ---- who a simulated IdP may vouch for ----------------------------------------------------------------------
def plays_idp(store: Store, areq: AuthRequest, org_id: str | None) -> bool:
    """Whether the hosted page may play an IdP for ``org_id``: the organization's connection (any state), an
    OAuth provider or the organization-less picker; never for an AuthKit organization without a connection, where
    AuthKit authenticates the user itself (password or code)."""
    return areq.kind != "authkit" or not org_id or store.org_connection(org_id) is not None


def authkit_only(store: Store, areq: AuthRequest, email: str) -> bool:
    """A user AuthKit must authenticate itself: one with a password, or whose organizations all lack SSO."""
    if areq.kind != "authkit":
        return False
    user = store.user_by_email(email)
    if user is not None and user["id"] in store.passwords:
        return True
    orgs = orgs_for_email(store, email)
    return bool(orgs) and not any(authkit.sso_connections(store, "", o) for o in orgs)


def may_vouch(store: Store, areq: AuthRequest, org_id: str | None, email: str) -> bool:
    """The one check before a code is issued without AuthKit's own proof (a password or a code): an IdP the page
    plays vouches for a user it knows, and the organization-less picker never for a user AuthKit authenticates
    itself. Every path that issues a code (picker, ``login_hint`` shortcut, organization-less picker) ends in
    :func:`complete_login`, which applies it."""
    return plays_idp(store, areq, org_id) and find_candidate(store, org_id, email) is not None and not (
        org_id is None and authkit_only(store, areq, email))


def _picker_method(areq: AuthRequest, conn: Entity | None) -> str:
    """SSO when an organization's connection vouched; else the OAuth provider the picker played (no password
    was checked, so never ``Password``)."""
    if conn is not None:
        return "SSO"
    return areq.provider if areq.provider and areq.provider.endswith("OAuth") else "GoogleOAuth"


# ---- completing a login --------------------------------------------------------------------------------
def complete_login(emu: Emulator, areq: AuthRequest, org_id: str | None, email: str,
                   method: str | None = None, *, auth_time: int | None = None) -> str:
    """Issue a code for ``email`` in ``org_id`` and return the ``redirect_uri?code=..&state=..`` URL; *method*
    (``Password``, ``MagicAuth``) only after AuthKit itself checked the user's password or code; without it the
    page played an IdP and :func:`may_vouch` must allow it (403 ``access_denied`` else). *auth_time*: the instant
    of the browser's last active authentication when AuthKit passed it through (``max_age``); else now."""
    from . import authkit_session

    store = emu.store
    with store.lock:
        cand = find_candidate(store, org_id, email)
        if cand is None or (method is None and not may_vouch(store, areq, org_id, email)):
            raise ApiError(403, f"{email} cannot sign in to this organization.", "access_denied")
        conn = store.connections.get(areq.connection_id or "") or (
            store.org_connection(org_id) if org_id else None
        )
        refused = idp_failures.refusal(emu, conn if method is None else None, org_id, email)
        if refused is None and method is None:
            refused = signing_certs.verify(emu, conn, org_id, email)
        if refused is not None:
            store.auth_requests.pop(areq.id, None)
            return add_query(areq.redirect_uri, error=refused[0], error_description=refused[1], state=areq.state)
        code = token(24)
        record: dict[str, Any] = {
            "kind": areq.kind,
            "client_id": areq.client_id,
            "redirect_uri": areq.redirect_uri,
            "code_challenge": areq.code_challenge,
            "code_challenge_method": areq.code_challenge_method,
            "organization_id": org_id,
            "expires": time.time() + emu.config.code_ttl,
        }
        if areq.kind == "sso":
            profile = build_profile(store, conn, org_id, cand, areq.provider)
            idp_failures.strip_attribute(emu, profile)
            record["profile_id"] = profile["id"]
        else:
            user = ensure_user(emu, cand, org_id)
            record["user_id"] = user["id"]
            if method is not None:
                conn = None
            record["authentication_method"] = method or _picker_method(areq, conn)
            record["connection_id"] = conn["id"] if conn is not None else None
            record["auth_time"] = auth_time if auth_time is not None else int(time.time())
            authkit_session.authenticated(user["id"], method, record["auth_time"])
        store.codes[code] = record
        store.auth_requests.pop(areq.id, None)
    return add_query(areq.redirect_uri, code=code, state=areq.state)


def add_query(url: str, **params: str | None) -> str:
    """Append query parameters (skipping ``None``) to ``url``."""
    parts = urlsplit(url)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query and extra else (parts.query or extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def ensure_user(emu: Emulator, cand: dict[str, Any], org_id: str | None) -> Entity:
    """The User Management user for a candidate, JIT-provisioning user and membership like AuthKit does."""
    store = emu.store
    user = store.users.get(cand["user_id"] or "") or store.user_by_email(cand["email"])
    du = store.directory_users.get(cand.get("directory_user_id") or "")
    if user is None:
        now = iso()
        user = {
            "id": new_id("user"),
            "email": cand["email"],
            "email_verified": True,
            "first_name": du.get("first_name") if du else None,
            "last_name": du.get("last_name") if du else None,
            "profile_picture_url": None,
            "external_id": None,
            "metadata": {},
            "last_sign_in_at": None,
            "locale": "en-US",
            "created_at": now,
            "updated_at": now,
        }
        store.users[user["id"]] = user
        emu.emit("user.created", serialize.user(user))
    if org_id and store.membership(user["id"], org_id) is None:
        now = iso()
        role = idp.role_for_groups(cand.get("groups") or [])
        m = {
            "id": new_id("om"),
            "user_id": user["id"],
            "organization_id": org_id,
            "status": "active",
            "role_slug": role,
            "directory_managed": du is not None,
            "custom_attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        store.memberships[m["id"]] = m
        emu.emit("organization_membership.created", serialize.membership(store, m, embed_user=False))
    return user


def build_profile(
    store: Store, conn: Entity | None, org_id: str | None, cand: dict[str, Any], provider: str | None = None
) -> Entity:
    """The SSO Profile the connection's IdP would assert for ``cand`` (stable id per connection+email)."""
    email = cand["email"]
    if conn is not None:
        conn_id, conn_type = conn["id"], conn["connection_type"]
    else:
        conn_type = provider or "GoogleOAuth"
        conn_id = f"conn_{conn_type.upper()}0000000000000000"[:31]
    du = store.directory_user_by_email(org_id, email) if org_id else None
    user = store.user_by_email(email)
    groups = store.groups_of(du["id"]) if du else []
    first = (du or user or {}).get("first_name")
    last = (du or user or {}).get("last_name")
    idp_id = du["idp_id"] if du else (user["id"] if user else email)
    group_claims = idp.profile_groups(conn_type, groups)
    key = store.profile_key(conn_id, email)
    prof_id = store.profiles.get(key) or new_id("prof")
    store.profiles[key] = prof_id
    role_slug = idp.role_for_groups([g["name"] for g in groups])
    if user is not None and org_id and (m := store.membership(user["id"], org_id)):
        role_slug = m["role_slug"]
    custom: dict[str, Any] = {}
    if du:
        custom = {k: v for k, v in du["custom_attributes"].items() if k in ("department", "job_title")}
    profile: Entity = {
        "object": "profile",
        "id": prof_id,
        "organization_id": org_id,
        "connection_id": conn_id,
        "connection_type": conn_type,
        "idp_id": idp_id,
        "email": email,
        "first_name": first,
        "last_name": last,
        "name": " ".join(x for x in (first, last) if x) or None,
        "role": {"slug": role_slug},
        "roles": [{"slug": role_slug}],
        "groups": group_claims,
        "custom_attributes": custom,
        "raw_attributes": idp.profile_raw_attributes(conn_type, idp_id, email, first, last, group_claims),
    }
    store.profile_data[prof_id] = profile
    return profile
