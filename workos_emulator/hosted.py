"""Browser-facing pages: AuthKit hosted login (email -> simulated IdP user picker), index, portal."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from . import authkit, authkit_session, flows, redirects
from .errors import ApiError, invalid_params, oauth_error
from .ids import new_id
from .state import Emulator, emulator
from .store import AuthRequest

bp = Blueprint("hosted", __name__)

IDP_NAMES = {
    "OktaSAML": "Okta", "OktaOIDC": "Okta", "AzureSAML": "Microsoft Entra ID", "EntraIdOIDC": "Microsoft Entra ID",
    "GoogleSAML": "Google Workspace", "GoogleOIDC": "Google Workspace", "OneLoginSAML": "OneLogin",
}
AUTH_REQUEST_TTL = 3600
NO_ORG = "-"


def _idp_name(emu: Emulator, org_id: str | None, areq: AuthRequest | None = None) -> str:
    conn = None
    if areq is not None and areq.connection_id:
        conn = emu.store.connections.get(areq.connection_id)
    if conn is None and org_id:
        conn = emu.store.org_connection(org_id)
    if conn is None:
        return (areq.provider if areq and areq.provider else None) or "Identity provider"
    kind: str = conn["connection_type"]
    return IDP_NAMES.get(kind, kind)


def begin_authorization(kind: str) -> Any:  # noqa: C901 - one branch per WorkOS authorization parameter rule
    """Handle ``/sso/authorize`` (``kind="sso"``) and ``/user_management/authorize`` (``"authkit"``)."""
    emu = emulator()
    args = request.args
    if args.get("client_id") != emu.config.client_id:
        raise oauth_error("invalid_client", "Unknown client_id.")
    redirect_uri = args.get("redirect_uri")
    if not redirect_uri:
        raise invalid_params("redirect_uri is required.", "redirect_uri")
    redirects.check_redirect_uri(emu.store, redirect_uri)
    if args.get("response_type", "code") != "code":
        raise invalid_params("response_type must be 'code'.", "response_type")
    challenge = args.get("code_challenge")
    method = args.get("code_challenge_method") or ("S256" if challenge else None)
    if challenge and method != "S256":
        raise invalid_params("code_challenge_method must be S256.", "code_challenge_method")
    if kind == "sso":
        org_id, conn_id = args.get("organization"), args.get("connection")
        provider = args.get("provider")
        if not (org_id or conn_id or provider):
            raise invalid_params("One of connection, organization or provider is required.",
                                 "connection", "organization", "provider")
    else:
        org_id, conn_id = args.get("organization_id"), args.get("connection_id")
        provider = args.get("provider")
    max_age = authkit_session.parse_max_age(args.get("max_age")) if kind == "authkit" else None
    with emu.store.lock:
        store = emu.store
        if org_id:
            store.get("organizations", org_id, "Organization")
        if conn_id:
            conn = store.get("connections", conn_id, "Connection")
            if org_id and conn.get("organization_id") != org_id:
                raise invalid_params("connection does not belong to organization.", "connection")
        elif kind == "sso" and org_id and store.org_connection(org_id) is None:
            raise ApiError(422, "The organization has no SSO connection.", "connection_not_found")
        areq = AuthRequest(
            id=new_id("areq"), kind=kind, client_id=emu.config.client_id, redirect_uri=redirect_uri,
            state=args.get("state"), code_challenge=challenge, code_challenge_method=method,
            organization_id=org_id, connection_id=conn_id,
            provider=provider if provider and provider != "authkit" else None,
            login_hint=args.get("login_hint"), nonce=args.get("nonce"), created_at=time.time(), max_age=max_age,
        )
        store.auth_requests[areq.id] = areq.to_dict()
        pinned = flows.request_org(store, areq)
        hint = (areq.login_hint or "").strip()
        if max_age is not None:
            # Recent enough: straight through; else the user signs in again on the page (no hint shortcut).
            passed = authkit_session.pass_through(emu, areq, pinned)
            if passed is not None:
                return redirect(passed, code=302)
        elif hint:
            user = store.user_by_email(hint)
            if pinned or areq.provider:
                targets: list[str | None] = [pinned]
            elif kind == "authkit" and user is not None and len(store.user_memberships(user["id"])) > 1:
                # AuthKit authenticates the user first; which of several organizations is the API client's
                # choice (organization_selection_required on the code exchange).
                targets = [None]
            else:
                targets = list(flows.orgs_for_email(store, hint))
            for target in targets:
                if flows.may_vouch(store, areq, target, hint):
                    return redirect(flows.complete_login(emu, areq, target, hint), code=302)
    if pinned or (kind == "sso" and areq.provider):
        return _picker(emu, areq, pinned, hint or None)
    return _email_page(areq, hint)


def _get_areq(areq_id: str) -> AuthRequest:
    emu = emulator()
    stored = emu.store.auth_requests.get(areq_id)
    areq = AuthRequest.from_dict(stored) if stored is not None else None
    if areq is None or time.time() - areq.created_at > AUTH_REQUEST_TTL:
        raise ApiError(400, "This sign-in request has expired or was already used. Start again.",
                       "invalid_authorization_request")
    return areq


def _email_page(areq: AuthRequest, email: str = "", error: str | None = None) -> Response:
    html = render_template("email.html", areq=areq, email=email, error=error)
    return Response(html, status=200 if error is None else 422)


def authkit_methods_offered(emu: Emulator, areq: AuthRequest, org_id: str | None) -> bool:
    """Password and "email me a code" for an organization without an active SSO connection (AuthKit only)."""
    return areq.kind == "authkit" and bool(org_id) and not authkit.sso_connections(emu.store, "", org_id)


def _picker(emu: Emulator, areq: AuthRequest, org_id: str | None, email: str | None = None,
            error: str | None = None) -> Response:
    with emu.store.lock:
        org = emu.store.organizations.get(org_id or "")
        methods = authkit_methods_offered(emu, areq, org_id)
        candidates = flows.login_candidates(emu.store, org_id) if flows.plays_idp(emu.store, areq, org_id) else None
        if candidates and org_id is None:
            candidates = [c for c in candidates if not flows.authkit_only(emu.store, areq, c["email"])]
        idp_name = _idp_name(emu, org_id, areq)
    return Response(render_template("picker.html", areq=areq, org=org, org_key=org_id or NO_ORG,
                                    candidates=candidates, idp_name=idp_name, email=(email or "").lower(),
                                    authkit_methods=methods, error=error))


@bp.get("/hosted/<areq_id>")
def email_step(areq_id: str) -> Any:
    """Step 1: enter your email."""
    return _email_page(_get_areq(areq_id))


@bp.post("/hosted/<areq_id>/email")
def email_submit(areq_id: str) -> Any:
    """Home-realm discovery by email domain (or the user's memberships)."""
    emu = emulator()
    areq = _get_areq(areq_id)
    email = (request.form.get("email") or "").strip()
    if "@" not in email:
        return _email_page(areq, email, "Enter a valid email address.")
    with emu.store.lock:
        pinned = flows.request_org(emu.store, areq)
        orgs = [pinned] if pinned else flows.orgs_for_email(emu.store, email)
        org_list = [emu.store.organizations[o] for o in orgs if o in emu.store.organizations]
    if not org_list:
        return _email_page(areq, email, f"No organization uses single sign-on for {email}.")
    if len(org_list) == 1:
        return redirect(url_for("hosted.idp_step", areq_id=areq.id, org_id=org_list[0]["id"], email=email), 303)
    return Response(render_template("choose_org.html", areq=areq, orgs=org_list, email=email))


@bp.get("/hosted/<areq_id>/idp/<org_id>")
def idp_step(areq_id: str, org_id: str) -> Any:
    """Step 2: the organization's IdP, simulated as a user picker."""
    emu = emulator()
    areq = _get_areq(areq_id)
    if org_id != NO_ORG:
        emu.store.get("organizations", org_id, "Organization")
    return _picker(emu, areq, None if org_id == NO_ORG else org_id, request.args.get("email"))


@bp.post("/hosted/<areq_id>/idp/<org_id>")
def idp_submit(areq_id: str, org_id: str) -> Any:
    """Sign in as the chosen identity: 302 to ``redirect_uri?code&state``."""
    emu = emulator()
    areq = _get_areq(areq_id)
    email = (request.form.get("email") or "").strip()
    target = None if org_id == NO_ORG else org_id
    with emu.store.lock:
        # Without an IdP to play, AuthKit authenticates the user itself (password or code): no picking.
        if not email or not flows.may_vouch(emu.store, areq, target, email):
            return Response(render_template("message.html", title="Sign-in failed",
                                            message=f"{email or 'This user'} cannot sign in here."), status=403)
        url = flows.complete_login(emu, areq, target, email)
    return redirect(url, code=302)


@bp.get("/")
def index() -> Any:
    """Index: the seeded organizations with links to their hosted login pages."""
    emu = emulator()
    with emu.store.lock:
        store = emu.store
        orgs = [
            {
                "org": o,
                "domains": [d["domain"] for d in store.org_domains(o["id"])],
                "idp": _idp_name(emu, o["id"]),
                "directories": store.org_directories(o["id"]),
                "users": flows.login_candidates(store, o["id"]),
            }
            for o in store.organizations.values()
        ]
    return render_template("index.html", orgs=orgs, client_id=emu.config.client_id)


@bp.get("/login/<org_id>")
def org_login(org_id: str) -> Any:
    """The hosted login page of one organization (``redirect_uri`` defaults to the registered one)."""
    emu = emulator()
    with emu.store.lock:
        emu.store.get("organizations", org_id, "Organization")
        redirect_uri = request.args.get("redirect_uri") or (emu.store.application.get("redirect_uris") or [""])[0]
        if not redirect_uri:
            raise invalid_params("redirect_uri is required.", "redirect_uri")
        redirects.check_redirect_uri(emu.store, redirect_uri)
        areq = AuthRequest(
            id=new_id("areq"), kind="authkit", client_id=emu.config.client_id, redirect_uri=redirect_uri,
            state=request.args.get("state"), organization_id=org_id, created_at=time.time(),
        )
        emu.store.auth_requests[areq.id] = areq.to_dict()
    return _picker(emu, areq, org_id)


@bp.get("/portal/<tok>")
def portal(tok: str) -> Any:
    """The Admin Portal stand-in page for a generated link."""
    emu = emulator()
    with emu.store.lock:
        link = emu.store.portal_links.get(tok)
        org = emu.store.organizations.get(link["organization_id"]) if link else None
    if link is None or org is None:
        return Response(render_template("message.html", title="Link expired",
                                        message="This Admin Portal link is invalid or was revoked."), status=404)
    return render_template("portal.html", link=link, org=org)
