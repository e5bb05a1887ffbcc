"""The setup-wizard engine: per-organization progress in the database, step order, and audited transitions.

Knows nothing of Flask: views pass the session, the organization, the plugin, the actor and the request info.
Progress is one ``WizardProgress`` row per organization and plugin, so an admin can leave and resume and two
admins see the same state. A hash of the plugin's step list is stored with it: when a plugin's steps change,
a half-done setup starts over (as Sentry's auth pipeline does).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..idp import IdPPlugin, WizardStep
from ..models import Organization, WizardProgress, utcnow
from ..services import audit
from ..services.organizations import CREATED_CONNECTIONS


class WizardRefused(AppError):
    """A step was requested out of order, for an unknown plugin or step, or by someone not allowed."""

    status = 409
    code = "wizard_step_refused"


def steps_hash(plugin: IdPPlugin, protocol: str) -> str:
    """A fingerprint of the plugin's step list for *protocol*."""
    steps = [(s.key, s.kind) for s in plugin.wizard_steps(protocol)]
    return hashlib.sha256(json.dumps([plugin.name, protocol, steps]).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class WizardState:
    """A read-only view of one organization's progress through one plugin's wizard."""

    plugin: IdPPlugin
    protocol: str
    steps: tuple[WizardStep, ...]
    current_key: str
    completed: tuple[str, ...]
    data: Mapping[str, Any]
    finished: bool

    def index(self, key: str) -> int:
        """The position of step *key*; :class:`WizardRefused` for an unknown step."""
        for i, step in enumerate(self.steps):
            if step.key == key:
                return i
        raise WizardRefused(f"{self.plugin.display_name} has no step {key!r}", code="unknown_step", status=404)

    def step(self, key: str) -> WizardStep:
        """The step called *key*."""
        return self.steps[self.index(key)]

    def reachable(self, key: str) -> bool:
        """Whether *key* is done already or the current step (steps ahead of it are not)."""
        return self.index(key) <= self.index(self.current_key)

    def previous(self, key: str) -> WizardStep | None:
        """The step before *key*."""
        i = self.index(key)
        return self.steps[i - 1] if i else None

    def following(self, key: str) -> WizardStep | None:
        """The step after *key*."""
        i = self.index(key)
        return self.steps[i + 1] if i + 1 < len(self.steps) else None

    @property
    def percent(self) -> int:
        """How much of the wizard is done."""
        done = sum(1 for s in self.steps if s.key in self.completed)
        return round(100 * done / len(self.steps))


def organization(session: Session, organization_id: str) -> Organization | None:
    """The tenant whose SSO the caller sets up: the caller's own organization (*organization_id*), by our id."""
    return session.scalar(select(Organization).where(Organization.id == organization_id))


def get_progress(session: Session, organization_id: str, plugin_name: str) -> WizardProgress | None:
    """The organization's progress row for a plugin, if the wizard was started."""
    return session.scalar(select(WizardProgress).where(WizardProgress.organization_id == organization_id,
                                                       WizardProgress.plugin == plugin_name))


def lock(session: Session, progress: WizardProgress) -> None:
    """Hold *progress*'s row until the transaction ends, and re-read it (in place) under the lock.

    Every writer of the wizard's connection ids takes it first, so two submits at once (two admins, a
    double-submit) take turns and the second sees the first's connection instead of creating another.
    PostgreSQL: ``SELECT … FOR UPDATE``. SQLite ignores that: a write first takes its database write lock
    (the driver opens the transaction before an UPDATE, never before a SELECT), as ``services.audit`` does.
    """
    if session.get_bind().dialect.name == "sqlite":
        table = WizardProgress.__table__
        session.execute(update(table).where(table.c.id == progress.id).values(plugin=table.c.plugin))
    session.scalar(select(WizardProgress).where(WizardProgress.id == progress.id).with_for_update()
                   .execution_options(populate_existing=True))


def start(session: Session, organization_id: str, plugin: IdPPlugin, cause: Cause,
          protocol: str = "saml") -> WizardProgress:
    """Start (or resume) a plugin's wizard for an organization; the caller commits."""
    if protocol not in plugin.protocols:
        raise WizardRefused(f"{plugin.display_name} does not support {protocol.upper()}", code="bad_protocol")
    progress = get_progress(session, organization_id, plugin.name)
    if progress is not None:
        return progress
    steps = plugin.wizard_steps(protocol)
    progress = WizardProgress(
        organization_id=organization_id, plugin=plugin.name, current_step=steps[0].key,
        steps_hash=steps_hash(plugin, protocol), completed_steps=[], updated_by=cause.actor.id,
        # The key fixes the WorkOS ACS URL and SP Entity ID shown to the admin before the connection exists.
        data={"protocol": protocol, "sp_key": secrets.token_hex(8)},
    )
    session.add(progress)
    session.flush()
    audit.record(session, action="sso_wizard.started", cause=cause, organization_id=organization_id,
                 target_type="wizard", target_id=progress.id,
                 details={"plugin": plugin.name, "protocol": protocol})
    return progress


def state(plugin: IdPPlugin, progress: WizardProgress) -> WizardState:
    """Read a progress row (call :func:`refresh` first to apply a changed step list)."""
    protocol = str(progress.data.get("protocol", "saml"))
    steps = plugin.wizard_steps(protocol)
    return WizardState(plugin, protocol, steps, progress.current_step, tuple(progress.completed_steps or ()),
                       dict(progress.data or {}), progress.completed_at is not None)


def refresh(session: Session, plugin: IdPPlugin, progress: WizardProgress, cause: Cause) -> bool:
    """Restart a half-done setup whose plugin changed its steps; returns whether it was reset."""
    protocol = str(progress.data.get("protocol", "saml"))
    if protocol in plugin.protocols and progress.steps_hash == steps_hash(plugin, protocol):
        return False
    reset(session, plugin, progress, cause.with_reason("steps_changed"), keep_connection=True)
    return True


def reset(session: Session, plugin: IdPPlugin, progress: WizardProgress, cause: Cause, *,
          protocol: str | None = None, keep_connection: bool = False) -> None:
    """Start over at the first step (keeping the SP key, so the IdP app need not change).

    The stored connection id is forgotten unless *keep_connection* (a changed step list is no reason to drop it);
    the connection itself stays at WorkOS, and the metadata step offers the organization's active one again.
    """
    lock(session, progress)
    protocol = protocol or str(progress.data.get("protocol", "saml"))
    if protocol not in plugin.protocols:
        protocol = "saml"
    steps = plugin.wizard_steps(protocol)
    forgotten = None if keep_connection else progress.data.get("connection_id")
    progress.data = {"protocol": protocol, "sp_key": progress.data.get("sp_key") or secrets.token_hex(8),
                     "connection_id": progress.data.get("connection_id") if keep_connection else None,
                     # Kept: a connection this wizard created is never adopted from WorkOS's events (docs/plugins.md).
                     CREATED_CONNECTIONS: list(progress.data.get(CREATED_CONNECTIONS) or [])}
    progress.current_step = steps[0].key
    progress.completed_steps = []
    progress.steps_hash = steps_hash(plugin, protocol)
    progress.completed_at = None
    progress.updated_by = cause.actor.id
    progress.updated_at = utcnow()
    audit.record(session, action="sso_wizard.reset", cause=cause, organization_id=progress.organization_id,
                 target_type="wizard", target_id=progress.id,
                 details={"plugin": plugin.name, "protocol": protocol, "reason": cause.reason or "restarted",
                          "forgotten_connection_id": forgotten})


def require_reachable(plugin: IdPPlugin, progress: WizardProgress, key: str) -> WizardStep:
    """The step *key*, or :class:`WizardRefused` when it lies ahead of the current step."""
    current = state(plugin, progress)
    step = current.step(key)
    if not current.reachable(key):
        raise WizardRefused(f"Finish “{current.step(current.current_key).title}” before “{step.title}”.")
    return step


def update_data(progress: WizardProgress, updates: Mapping[str, Any]) -> None:
    """Merge *updates* into the progress data (``None`` removes a key); reassigns so the ORM sees it."""
    data = dict(progress.data or {})
    for key, value in updates.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    progress.data = data


def complete_step(session: Session, plugin: IdPPlugin, progress: WizardProgress, key: str, cause: Cause,
                  *, data: Mapping[str, Any] | None = None,
                  details: Mapping[str, Any] | None = None) -> WizardStep | None:
    """Record step *key* as done (with its data), move the current step forward, audit; returns the next step."""
    lock(session, progress)  # merged into the data as it is now, not as this request first read it
    step = require_reachable(plugin, progress, key)
    current = state(plugin, progress)
    if data:
        update_data(progress, data)
    completed = list(progress.completed_steps or [])
    if key not in completed:
        completed.append(key)
    progress.completed_steps = completed
    following = current.following(key)
    if following is not None and current.index(following.key) > current.index(progress.current_step):
        progress.current_step = following.key
    if following is None:
        progress.completed_at = utcnow()
    progress.updated_by = cause.actor.id
    progress.updated_at = utcnow()
    audit.record(session, action="sso_wizard.step_completed", cause=cause, organization_id=progress.organization_id,
                 target_type="wizard", target_id=progress.id,
                 details={"plugin": plugin.name, "step": step.key, "kind": step.kind, **(details or {})})
    return following


def reopen_from(plugin: IdPPlugin, progress: WizardProgress, key: str) -> None:
    """Mark *key* and every later step not done (e.g. new metadata invalidates an earlier test login)."""
    current = state(plugin, progress)
    cut = current.index(key)
    keep = {s.key for s in current.steps[:cut]}
    progress.completed_steps = [k for k in progress.completed_steps or [] if k in keep]
    if current.index(progress.current_step) > cut:
        progress.current_step = key
    progress.completed_at = None
