"""Applying WorkOS events to our state, one module per event family, dispatched by type through
:mod:`.registry` (``@handles("dsync.user.updated", ...)``).

Ordering rules (WorkOS does not deliver webhooks in order):

- Users and groups carry a version: the object's ``updated_at`` (falling back to the event time). An event
  older than the stored version is a no-op; an equal one re-applies the same state (idempotent).
- Deletion leaves a tombstone (``deleted_at``) that is final: WorkOS never reuses ids, so any later-arriving
  create or update for a deleted id is stale and cannot resurrect it. A delete that arrives before the
  create stores the tombstone straight away.
- Group memberships are versioned by (event time, event id) and kept even when the user or group is not
  known yet: a membership only counts once both exist, so early arrivals take effect when they can.
- A deleted directory (``dsync.deleted``) is final for its id: later events for it are ignored.

Every handler runs inside the caller's transaction (see :mod:`services.inbox`) and audits what it changes
with the WorkOS event id as ``source_event_id``.
"""

from __future__ import annotations

from ... import metrics

# Importing each family registers its handlers; this order is the Events API filter's order.
from . import (
    authentication,
    connections,
    directories,
    directory_groups,
    directory_users,
    group_memberships,
    organization_memberships,
    organizations,
    sessions,
)
from .context import EventContext, PayloadError, parse_time, resolve_organization
from .member_fanout import INTERNAL_HANDLERS, apply_internal
from .registry import HANDLERS, DuplicateHandler, Handler, handled_event_types, handler_for, handles

# Every family is registered by now: the types we apply are the only webhook event types with a label of their own.
metrics.label_event_types(handled_event_types())

__all__ = [
    "HANDLERS", "INTERNAL_HANDLERS", "DuplicateHandler", "EventContext", "Handler", "PayloadError",
    "apply_internal", "authentication", "connections",
    "directories", "directory_groups", "directory_users", "group_memberships", "handled_event_types",
    "handler_for", "handles", "organization_memberships", "organizations", "parse_time", "resolve_organization",
    "sessions",
]
