"""Helpers for the directory-people tests: replaying the emulator's events (or missing them), and reading what a
directory user hangs on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor
from hatidata_auth.idp import get_registry
from hatidata_auth.models import ApiKey, AuthSession, DirectoryUser, Membership, Organization, User, utcnow
from hatidata_auth.services import reconcile
from tests.support.dsync import deliver, mirror_organizations
from tests.support.servers import EmulatorControl


@dataclass
class Replay:
    """Plays the IdP through the emulator's control API and delivers its signed events to the app, or misses
    them (the resync must then repair)."""

    control: EmulatorControl
    app: Flask
    position: int = 0
    missed: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.position = len(self.control.events())
        self.client = self.app.test_client()

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        """A control API call (the IdP acting)."""
        return self.control.ctl(method, path, body)

    def new_events(self) -> list[dict[str, Any]]:
        """Events emitted since the last delivery."""
        events = self.control.events()
        out, self.position = events[self.position:], len(events)
        return out

    def deliver(self) -> int:
        """Deliver the new events as signed webhooks, in order; returns how many."""
        events = self.new_events()
        for event in events:
            assert deliver(self.client, self.app, event) in ("applied", "duplicate"), event["id"]
        return len(events)

    def miss(self) -> int:
        """Drop the new events (WorkOS's deliveries failed); returns how many."""
        events = self.new_events()
        self.missed.extend(events)
        return len(events)

    def apply(self, how: str, session: Session, workos_client: Any, organization_id: str) -> None:
        """Deliver the new events as signed webhooks (*how* ``"webhooks"``), or miss them and run the organization's
        full resync (``"resync"``)."""
        if how == "webhooks":
            self.deliver()
        else:
            self.miss()
            reconcile.full_resync(session, workos_client, organization_id=organization_id)


def prepare(session: Session, workos_client: Any) -> dict[str, Organization]:
    """The demo organizations mirrored, resynced and with the demo mappings."""
    orgs = mirror_organizations(session, workos_client)
    for report in reconcile.resync_all(session, workos_client):
        reconcile.ensure_demo_mappings(session, workos_client, organization_id=report.organization_id,
                                       actor=Actor.system("test"), plugins=get_registry(current_app))
        session.commit()
    return orgs


def memberships_of(session: Session, org_id: str, directory_user_id: str) -> list[Membership]:
    """The memberships of the organization hanging on a directory user."""
    session.expire_all()
    return list(session.scalars(select(Membership).where(Membership.organization_id == org_id,
                                                         Membership.directory_user_id == directory_user_id)))


def directory_user(session: Session, org_id: str, workos_id: str) -> DirectoryUser:
    """Our mirror of one directory user."""
    row = session.scalar(select(DirectoryUser).where(DirectoryUser.organization_id == org_id,
                                                     DirectoryUser.workos_id == workos_id))
    assert row is not None, workos_id
    return row


def person_of(session: Session, org_id: str, workos_id: str) -> tuple[Membership, User]:
    """The one membership hanging on the directory user, and its person (fails unless exactly one)."""
    held = memberships_of(session, org_id, workos_id)
    assert len(held) == 1, [(m.user_id, m.status) for m in held]
    user = session.get(User, held[0].user_id)
    assert user is not None
    return held[0], user


def give_session_and_key(session: Session, org_id: str, user_id: str, sid: str) -> str:
    """A live session and an active API key of the person in the organization; returns the key id."""
    session.add(AuthSession(organization_id=org_id, workos_session_id=sid, user_id=user_id,
                            expires_at=utcnow() + timedelta(hours=1)))
    key = ApiKey(organization_id=org_id, name="agent", owner_user_id=user_id, prefix=f"hd_{sid[-8:]}",
                 key_hash=f"hash-{sid}", scopes=["data:read"])
    session.add(key)
    session.commit()
    return key.id


def held_access(session: Session, org_id: str, user_id: str) -> dict[str, int]:
    """What a person can still use in the organization: active memberships, live sessions, active keys."""
    session.expire_all()
    return {
        "memberships": len(session.scalars(select(Membership.id).where(
            Membership.organization_id == org_id, Membership.user_id == user_id,
            Membership.status == "active")).all()),
        "sessions": len(session.scalars(select(AuthSession.id).where(
            AuthSession.organization_id == org_id, AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None))).all()),
        "keys": len(session.scalars(select(ApiKey.id).where(
            ApiKey.organization_id == org_id, ApiKey.owner_user_id == user_id, ApiKey.status == "active")).all()),
    }


NO_ACCESS = {"memberships": 0, "sessions": 0, "keys": 0}
