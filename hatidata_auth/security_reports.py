"""Report an unauthenticated failure from inside a request: count it, audit it as a rate-limited summary.

The one entry point of the webhook view, the login callback's failures and the API-key resolver; see
:mod:`hatidata_auth.services.security_events` for the bound it keeps.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app

from .causes import Actor, Cause
from .extensions import cache, db
from .request_hooks import request_info
from .services import security_events

log = logging.getLogger(__name__)

WINDOW_SETTING = "HATIDATA_SECURITY_SUMMARY_WINDOW"


def window() -> int:
    """The summary window in seconds (``HATIDATA_SECURITY_SUMMARY_WINDOW``, default 60)."""
    return int(current_app.config.get(WINDOW_SETTING) or security_events.DEFAULT_WINDOW)


def shared_cache() -> Any:
    """The app's shared cache backend (Redis in production)."""
    return current_app.extensions["cache"][cache]


def report(kind: str, reason: str, sample: str = "", *, organization_id: str | None = None,
           actor: Actor | None = None, target_type: str | None = None, target_id: str | None = None) -> None:
    """Count the failure and, at most once per window and key, commit an audit summary; never raises."""
    session = db.session()
    try:
        security_events.note(session, shared_cache(), kind=kind, reason=reason, sample=sample,
                             organization_id=organization_id,
                             cause=Cause.by(actor or Actor(type="anonymous"), request_info()),
                             window=window(), target_type=target_type, target_id=target_id)
        session.commit()
    except Exception:  # an audit failure must not turn a rejection into an acceptance
        session.rollback()
        log.exception("could not audit a %s failure", kind)
