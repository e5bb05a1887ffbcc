"""The hosted page's AuthKit methods for an organization without SSO: email + password, "email me a code", and
the email-verification step. Never for an organization that enforces SSO (an active connection of the
organization, or of the one owning the email's domain): the forms are not offered and the POSTs are refused."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request

from . import authkit, flows
from .errors import ApiError
from .hosted import _get_areq, _picker
from .state import Emulator, emulator
from .store import AuthRequest

bp = Blueprint("hosted_authkit", __name__)


def _areq_and_org(areq_id: str, org_id: str) -> tuple[Emulator, AuthRequest]:
    emu = emulator()
    areq = _get_areq(areq_id)
    emu.store.get("organizations", org_id, "Organization")
    return emu, areq


def _refused(title: str, message: str, status: int) -> Response:
    return Response(render_template("message.html", title=title, message=message), status=status)


def _code_page(areq: AuthRequest, org_id: str, *, email: str, kind: str, pending_token: str | None = None,
               error: str | None = None) -> Response:
    html = render_template("code.html", areq=areq, org_key=org_id, email=email, kind=kind,
                           pending_token=pending_token, error=error)
    return Response(html, status=200 if error is None else 422)


def _guard(emu: Emulator, areq: AuthRequest, org_id: str, email: str) -> Response | None:
    """A refusal page when the organization (or the email's domain) enforces SSO, or *email* is not a member."""
    if areq.kind != "authkit" or authkit.sso_connections(emu.store, email, org_id):
        return _refused("Single sign-on required", "This organization requires signing in through its identity "
                                                   "provider.", 403)
    return None


def _finish(emu: Emulator, areq: AuthRequest, org_id: str, email: str, method: str) -> Any:
    if flows.find_candidate(emu.store, org_id, email) is None:
        return _refused("Sign-in failed", f"{email} cannot sign in here.", 403)
    return redirect(flows.complete_login(emu, areq, org_id, email, method), code=302)


def _error_page(areq: AuthRequest, org_id: str, email: str, exc: ApiError) -> Response:
    if exc.status == 429:
        return _refused("Too many attempts", "Too many attempts for this email; wait a minute and retry.", 429)
    resp = _picker(emulator(), areq, org_id, email, error=exc.message)
    resp.status_code = 401 if exc.code == "invalid_credentials" else 422
    return resp


@bp.post("/hosted/<areq_id>/password/<org_id>")
def password_submit(areq_id: str, org_id: str) -> Any:
    """Email + password: 302 to ``redirect_uri?code``; the verification step for an unverified email."""
    emu, areq = _areq_and_org(areq_id, org_id)
    email = (request.form.get("email") or "").strip()
    ua = request.headers.get("User-Agent")
    with emu.store.lock:
        refusal = _guard(emu, areq, org_id, email)
        if refusal is not None:
            return refusal
        try:
            authkit.verify_password(emu, email, request.form.get("password") or "", request.remote_addr, ua, org_id)
        except ApiError as exc:
            if exc.code == "email_verification_required":
                return _code_page(areq, org_id, email=email, kind="email_verification",
                                  pending_token=exc.extra["pending_authentication_token"])
            return _error_page(areq, org_id, email, exc)
        return _finish(emu, areq, org_id, email, authkit.PASSWORD)


@bp.post("/hosted/<areq_id>/verify/<org_id>")
def verify_submit(areq_id: str, org_id: str) -> Any:
    """The email-verification code: completes the sign-in that asked for it."""
    emu, areq = _areq_and_org(areq_id, org_id)
    pending_token = request.form.get("pending_authentication_token") or ""
    ip, ua = request.remote_addr, request.headers.get("User-Agent")
    with emu.store.lock:
        pending_user = emu.store.users.get((emu.store.pending_authentications.get(pending_token) or {}).get(
            "user_id") or "")
        email = pending_user["email"] if pending_user else (request.form.get("email") or "").strip()
        refusal = _guard(emu, areq, org_id, email)
        if refusal is not None:
            return refusal
        try:
            user, pending = authkit.verify_email(emu, pending_token, (request.form.get("code") or "").strip(), ip, ua)
        except ApiError as exc:
            if exc.status == 429:
                return _error_page(areq, org_id, email, exc)
            return _code_page(areq, org_id, email=email, kind="email_verification", pending_token=pending_token,
                              error=exc.message)
        method = pending.get("method") or authkit.PASSWORD
        authkit.emit_result(emu, method, user["email"], user, ip, ua)
        return _finish(emu, areq, org_id, user["email"], method)


@bp.post("/hosted/<areq_id>/magic/<org_id>")
def magic_send(areq_id: str, org_id: str) -> Any:
    """"Email me a code": the code goes to ``GET /_emulator/magic_auth?email=`` (members only; the page is the
    same either way, so it reveals no membership)."""
    emu, areq = _areq_and_org(areq_id, org_id)
    email = (request.form.get("email") or "").strip()
    with emu.store.lock:
        refusal = _guard(emu, areq, org_id, email)
        if refusal is not None:
            return refusal
        try:
            if "@" in email and flows.find_candidate(emu.store, org_id, email) is not None:
                authkit.create_magic_auth(emu, email)
            elif "@" in email:  # the same limit for any email: a 429 must not tell members apart
                authkit.check_magic_auth_rate(emu.store, email)
        except ApiError as exc:
            return _error_page(areq, org_id, email, exc)
    return _code_page(areq, org_id, email=email, kind="magic_auth")


@bp.post("/hosted/<areq_id>/magic/<org_id>/verify")
def magic_verify(areq_id: str, org_id: str) -> Any:
    """The Magic Auth code: 302 to ``redirect_uri?code``."""
    emu, areq = _areq_and_org(areq_id, org_id)
    email = (request.form.get("email") or "").strip()
    with emu.store.lock:
        refusal = _guard(emu, areq, org_id, email)
        if refusal is not None:
            return refusal
        try:
            authkit.verify_magic_code(emu, email, (request.form.get("code") or "").strip(), request.remote_addr,
                                      request.headers.get("User-Agent"), org_id)
        except ApiError as exc:
            if exc.status == 429:
                return _error_page(areq, org_id, email, exc)
            return _code_page(areq, org_id, email=email, kind="magic_auth", error=exc.message)
        return _finish(emu, areq, org_id, email, authkit.MAGIC_AUTH)
