"""Sign-in failures the simulated IdP produces for chosen users (``/_emulator/sign_in_failures``).

What a customer's IdP does that breaks a sign-in, so the app's sign-in diagnostics can be exercised:

- ``not_assigned``: the IdP refuses the user (not assigned to the application). WorkOS then redirects to the
  ``redirect_uri`` with ``error=access_denied`` and the IdP's ``error_description`` (in that IdP's words, e.g.
  Okta's "User is not assigned to the client application."), and records ``authentication.sso_failed`` with the
  same ``error.code`` / ``error.message``.
- ``missing_attribute``: the IdP's assertion lacks an attribute (``first_name``, ``last_name`` or ``groups``):
  the sign-in completes, but the profile (and its ``raw_attributes``) carries no value for it. ``email`` and
  ``idp_id`` are refused (422): WorkOS cannot build a profile without them.

A failure applies to every SSO sign-in of that email (hosted picker and ``login_hint``) until removed.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from . import idp
from .errors import invalid_params
from .http import json_body, opt_str, require_str
from .state import Emulator, emulator
from .store import Entity

bp = Blueprint("idp_failures", __name__, url_prefix="/_emulator")

KINDS = ("not_assigned", "missing_attribute")
OMITTABLE = ("first_name", "last_name", "groups")
NOT_ASSIGNED_WORDS = {
    "OktaSAML": "User is not assigned to the client application.",
    "OktaOIDC": "User is not assigned to the client application.",
    "AzureSAML": "AADSTS50105: The signed in user is not assigned to a role for the application.",
    "EntraIdOIDC": "AADSTS50105: The signed in user is not assigned to a role for the application.",
    "GoogleSAML": "app_not_configured_for_user: The user is not assigned to this app in Google Workspace.",
    "OneLoginSAML": "The user is not assigned to this application in OneLogin.",
}
DEFAULT_NOT_ASSIGNED = "The user is not assigned to this application."


@bp.post("/sign_in_failures")
def add_failure() -> Any:
    """``{email, kind: not_assigned | missing_attribute, attribute?}`` -> 201 with the failure."""
    data = json_body()
    email = require_str(data, "email").strip().lower()
    kind = require_str(data, "kind")
    if kind not in KINDS:
        raise invalid_params(f"kind must be one of {', '.join(KINDS)}.", "kind")
    attribute = opt_str(data, "attribute")
    if kind == "missing_attribute" and attribute not in OMITTABLE:
        raise invalid_params(f"attribute must be one of {', '.join(OMITTABLE)} (WorkOS needs email and idp_id).",
                             "attribute")
    failure = {"email": email, "kind": kind, "attribute": attribute if kind == "missing_attribute" else None}
    store = emulator().store
    with store.lock:
        store.sign_in_failures[email] = failure
    return jsonify(failure), 201


@bp.get("/sign_in_failures")
def list_failures() -> Any:
    """The failures in force."""
    return jsonify({"data": sorted(emulator().store.sign_in_failures.values(), key=lambda f: f["email"])})


@bp.delete("/sign_in_failures")
def clear_failures() -> Any:
    """Remove every failure."""
    store = emulator().store
    with store.lock:
        store.sign_in_failures.clear()
    return Response(status=204)


def refusal(emu: Emulator, conn: Entity | None, org_id: str | None, email: str) -> tuple[str, str] | None:
    """When the IdP of *conn* refuses *email*: record ``authentication.sso_failed`` and return WorkOS's redirect
    ``(error, error_description)``; ``None`` when it does not."""
    failure = emu.store.sign_in_failures.get(email.strip().lower())
    if conn is None or failure is None or failure["kind"] != "not_assigned":
        return None
    message = NOT_ASSIGNED_WORDS.get(str(conn.get("connection_type")), DEFAULT_NOT_ASSIGNED)
    emit_sso_failed(emu, conn, org_id, email, "access_denied", message)
    return "access_denied", message


def emit_sso_failed(emu: Emulator, conn: Entity, org_id: str | None, email: str, code: str, message: str) -> None:
    """Record ``authentication.sso_failed`` for *email*'s sign-in through *conn* (WorkOS's ``error.code`` and
    ``error.message``)."""
    user = emu.store.user_by_email(email)
    emu.emit("authentication.sso_failed", {
        "type": "sso", "status": "failed", "ip_address": None, "user_agent": None,
        "user_id": user["id"] if user else None, "email": email,
        "sso": {"organization_id": org_id, "connection_id": conn["id"], "session_id": None},
        "error": {"code": code, "message": message},
    }, org_id)


def strip_attribute(emu: Emulator, profile: Entity) -> None:
    """Drop from *profile* the attribute a ``missing_attribute`` failure of its email names."""
    failure = emu.store.sign_in_failures.get(str(profile.get("email") or "").lower())
    if failure is None or failure["kind"] != "missing_attribute":
        return
    field = failure["attribute"]
    profile[field] = [] if field == "groups" else None
    profile["name"] = " ".join(x for x in (profile.get("first_name"), profile.get("last_name")) if x) or None
    raw = idp.profile_raw_attributes(profile["connection_type"], profile["idp_id"], profile["email"],
                                     profile.get("first_name"), profile.get("last_name"), profile.get("groups") or [])
    profile["raw_attributes"] = {k: v for k, v in raw.items() if v not in (None, "", [])}
