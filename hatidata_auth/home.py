"""The landing page at ``/``: a sign-in form, or who you are and where to go next."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from .extensions import db
from .identity import current_identity, get_identity
from .services import alerts, session_refresh, whoami
from .services.credentials import Unauthenticated

bp = Blueprint("home", __name__)


@bp.get("/")
def index() -> str:
    """Signed out (or with a key or bearer token): 200, the sign-in form (home-realm discovery by email).
    Signed in with the browser session: 200, name, organization, role, sign-in method and session expiry, the
    organizations to switch to, next steps and sign-out (flash messages of a switch or sign-out on top)."""
    try:
        identity = get_identity()
    except Unauthenticated:
        identity = None
    # The page speaks for the person across organizations: only their browser session, never a key or bearer.
    if identity is None or identity.auth_type != "session" or request.environ.get("hatidata.credential") != "cookie":
        return render_template("home.html", identity=None, me=None, organizations=[], alerts=[])
    assert identity.user_id is not None
    assert identity.session_id is not None
    assert identity.email is not None
    me = whoami.signed_in(db.session(), organization_id=identity.organization_id, session_id=identity.session_id,
                          user_id=identity.user_id, email=identity.email, role=identity.role)
    organizations = session_refresh.organization_choices(db.session(), user_id=current_identity.user_id,
                                                         organization_id=identity.organization_id,
                                                         session_id=identity.session_id, email=identity.email)
    # The same permission as GET /api/v1/organization/alerts: the admins who can act on them.
    open_alerts = (alerts.open_alerts(db.session(), identity.organization_id)
                   if identity.has_permission("sso:manage") else [])
    return render_template("home.html", identity=identity, me=me, organizations=organizations, alerts=open_alerts)
