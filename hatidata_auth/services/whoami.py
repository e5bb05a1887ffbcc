"""Who is signed in, as the home page tells a person: name, organization, role, how they signed in, until when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AuthSession, Organization, User

METHOD_LABELS = {
    "sso": "Single sign-on",
    "password": "Email and password",
    "magicauth": "Emailed sign-in code",
    "oauth": "Google or Microsoft account",
    "passkey": "Passkey",
}
"""People's words for each of ``models.SIGN_IN_METHODS`` (a provider's own OAuth method, ``googleoauth``, is
``oauth``); a method outside them is shown as WorkOS named it."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The signed-in person in their current organization, through this browser session."""

    name: str | None
    email: str
    organization_name: str
    role: str | None
    sign_in_method: str
    expires_at: datetime | None
    remembered: bool


def method_label(method: str | None) -> str:
    """How a session was signed in, in people's words."""
    if not method:
        return "Unknown"
    return METHOD_LABELS.get("oauth" if method.endswith("oauth") else method, method)


def signed_in(db: Session, *, organization_id: str, session_id: str, user_id: str, email: str,
              role: str | None) -> SignedIn | None:
    """The home page's facts of one session of *organization_id* (``None``: no such session or organization)."""
    org_name = db.scalar(select(Organization.name).where(Organization.id == organization_id))
    record = db.scalar(select(AuthSession).where(AuthSession.organization_id == organization_id,
                                                 AuthSession.id == session_id, AuthSession.user_id == user_id))
    if org_name is None or record is None:
        return None
    user = db.get(User, user_id)
    parts = [p for p in ((user.first_name, user.last_name) if user else ()) if p]
    return SignedIn(name=" ".join(parts) or None, email=email, organization_name=org_name, role=role,
                    sign_in_method=method_label(record.auth_method), expires_at=record.expires_at,
                    remembered=bool(record.remembered))
