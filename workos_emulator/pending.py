"""Pending authentications: a sign-in that needs a second step keeps its state under a single-use token
(``Store.pending_authentications``: ``{"kind", "user_id", "expires", ...}``)."""

from __future__ import annotations

import time

from . import serialize
from .errors import ApiError
from .ids import token
from .state import Emulator
from .store import Entity


def take_pending(emu: Emulator, pending_token: object, kind: str) -> Entity:
    """Consume a live pending authentication of ``kind``; 400 ``invalid_pending_authentication_token`` else."""
    pending = emu.store.pending_authentications.get(pending_token) if isinstance(pending_token, str) else None
    if pending is None or pending["kind"] != kind or pending["expires"] < time.time():
        raise ApiError(400, "The pending authentication token is invalid or has expired.",
                       "invalid_pending_authentication_token")
    return pending


def require_organization(emu: Emulator, user: Entity, record: Entity) -> None:
    """A sign-in without an organization by a member of several: 403 ``organization_selection_required``
    with a pending authentication token (completed by the ``organization-selection`` grant)."""
    orgs = [emu.store.organizations[m["organization_id"]] for m in emu.store.user_memberships(user["id"])
            if m["organization_id"] in emu.store.organizations]
    if len(orgs) < 2:
        return
    pending = token(24)
    emu.store.pending_authentications[pending] = {
        "kind": "organization_selection", "user_id": user["id"], "expires": time.time() + emu.config.code_ttl,
        "record": {k: v for k, v in record.items() if k not in ("code_challenge", "code_challenge_method")},
    }
    raise ApiError(403, "The user must choose an organization to finish their authentication.",
                   "organization_selection_required", pending_authentication_token=pending,
                   organizations=[{"id": o["id"], "name": o["name"]} for o in orgs], user=serialize.user(user))
