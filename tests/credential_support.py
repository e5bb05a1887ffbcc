"""Credentials for members of an :func:`tests.api_support.make_tenant` organization: API keys with chosen
scopes, and sessions (our stored record plus an access token signed by the emulator's real key)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import ApiKey, AuthSession, Membership, utcnow
from hatidata_auth.services import api_keys as key_service
from tests.auth_support import forge_token


def bearer(credential: str) -> dict[str, str]:
    """The ``Authorization`` header for a key secret or an access token."""
    return {"Authorization": f"Bearer {credential}"}


def new_key(app: Flask, organization_id: str, owner_user_id: str, scopes: list[str]) -> tuple[str, str]:
    """A key of *owner_user_id* with *scopes* (created as its owner would); returns ``(key id, secret)``."""
    with app.app_context():
        created = key_service.create_key(db.session, organization_id=organization_id, owner_user_id=owner_user_id,
                                         name=f"key {uuid.uuid4().hex[:6]}", scopes=scopes,
                                         cause=Cause.by(Actor("user", owner_user_id)))
        db.session.commit()
        db.session.remove()
    return created.key.id, created.secret


def new_session(app: Flask, emulator: Any, organization_id: str, user_id: str) -> tuple[str, str]:
    """A live session of a member; returns ``(session id, access token)``."""
    sid = f"session_{uuid.uuid4().hex[:20]}"
    with app.app_context():
        record = AuthSession(organization_id=organization_id, workos_session_id=sid, user_id=user_id,
                             expires_at=utcnow() + timedelta(hours=1))
        db.session.add(record)
        db.session.commit()
        session_id = record.id
        db.session.remove()
    return session_id, forge_token(emulator, sub=f"user_{user_id}", sid=sid)


def key_row(app: Flask, key_id: str) -> dict[str, Any]:
    """A stored key's columns (to prove a refused operation changed nothing)."""
    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        assert key is not None
        row = {c.key: getattr(key, c.key) for c in ApiKey.__table__.columns if c.key != "last_used_at"}
        db.session.remove()
    return row


def member_role(app: Flask, organization_id: str, user_id: str) -> str | None:
    """The member's role if their membership is active, else ``None``."""
    with app.app_context():
        row = db.session.execute(select(Membership.role, Membership.status).where(
            Membership.organization_id == organization_id, Membership.user_id == user_id)).first()
        db.session.remove()
    return None if row is None or row[1] != "active" else row[0]
