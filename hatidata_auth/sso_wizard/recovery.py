"""Reconcile a wizard's connection with WorkOS on every visit, so a setup never points at a connection that is gone.

Knows nothing of Flask (as :mod:`.wizard`): the view passes the session, the client, the organization, the plugin,
the progress row and the cause; the caller commits. The rules (``docs/plugins.md``, "Wizards that recover"):

- the connection the wizard stored is looked up at WorkOS on each visit; a 404 means it is gone: the wizard forgets
  it (audited), reopens the metadata step, and says so, so the next submit there creates a new one;
- with no connection stored, the organization's own active connection of the plugin's type is offered for editing
  instead of a second one;
- a connection the wizard created is not the organization's sign-in connection until a test sign-in through it
  succeeded and the admin activated it (:func:`~hatidata_auth.services.sso_setup.activate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..causes import Cause
from ..idp import IdPPlugin
from ..models import Organization, WizardProgress
from ..services import audit
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, translate_errors
from . import wizard

#: What :func:`reconcile` found: ``none`` (no connection yet), ``ok``, ``gone`` (404 at WorkOS, forgotten now),
#: ``unreachable`` (WorkOS did not answer; nothing changed).
STATUSES = ("none", "ok", "gone", "unreachable")


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """The wizard's connection as WorkOS sees it now, and the organization's connection offered for editing."""

    status: str
    connection_id: str | None = None
    state: str | None = None
    connection_type: str | None = None
    #: Set when the wizard has no connection and the organization has an active one of the plugin's type.
    offered_id: str | None = None
    #: Whether the wizard's connection is the organization's sign-in connection (else: not used until tested).
    in_use: bool = False
    #: The connection found gone, until the metadata step saves a new one (the notice outlives the redirect).
    gone_id: str | None = None


def _value(value: object) -> str:
    return str(getattr(value, "value", value))


def _connection(client: WorkOSClient, connection_id: str) -> tuple[str, str] | None:
    """``(state, type)`` of a connection at WorkOS; ``None`` when WorkOS does not know it."""
    try:
        with translate_errors():
            conn = client.sso.get_connection(connection_id)
    except WorkOSNotFound:
        return None
    return _value(conn.state), _value(conn.connection_type)


def _forget(session: Session, organization: Organization, plugin: IdPPlugin, progress: WizardProgress,
            connection_id: str, cause: Cause) -> None:
    wizard.lock(session, progress)
    if progress.data.get("connection_id") == connection_id:  # not replaced meanwhile by a request holding the lock
        state = wizard.state(plugin, progress)
        metadata_key = next((s.key for s in state.steps if s.kind == "metadata"), None)
        wizard.update_data(progress, {"connection_id": None, "test_login": None, "connection_gone": connection_id})
        if metadata_key is not None:
            wizard.reopen_from(plugin, progress, metadata_key)
    if organization.connection_id == connection_id:
        organization.connection_state = "deleted"
    audit.record(session, action="sso_wizard.connection_gone", cause=cause.with_reason("connection_not_found"),
                 organization_id=organization.id, target_type="connection", target_id=connection_id,
                 details={"plugin": plugin.name})


def _offer(client: WorkOSClient, organization: Organization, plugin: IdPPlugin, protocol: str) -> str | None:
    wanted = plugin.connection_types.get(protocol)
    if (not organization.connection_id or organization.connection_state != "active"
            or organization.connection_type != wanted):
        return None
    found = _connection(client, organization.connection_id)
    if found is None or found[0] != "active" or found[1] != wanted:
        return None
    return organization.connection_id


def reconcile(session: Session, client: WorkOSClient, organization: Organization, plugin: IdPPlugin,
              progress: WizardProgress, cause: Cause) -> ConnectionCheck:
    """Check the wizard's stored connection at WorkOS (forgetting it when gone) or find one to offer for editing.

    WorkOS unreachable or refusing is ``unreachable``: nothing is changed, the page says it could not check.
    """
    stored = progress.data.get("connection_id")
    protocol = str(progress.data.get("protocol", "saml"))
    gone = progress.data.get("connection_gone")
    try:
        if not stored:
            return ConnectionCheck("none", offered_id=_offer(client, organization, plugin, protocol), gone_id=gone)
        found = _connection(client, str(stored))
    except WorkOSFailure:
        return ConnectionCheck("unreachable", stored)
    if found is None:
        _forget(session, organization, plugin, progress, str(stored), cause)
        return ConnectionCheck("gone", str(stored), gone_id=str(stored))
    return ConnectionCheck("ok", str(stored), found[0], found[1], in_use=organization.connection_id == stored)

