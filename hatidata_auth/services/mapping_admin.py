"""Role mappings as the API manages them: one mapping's edits, a mapping by id, a change's outcome, why a member has
their role.

The engine and its whole-set write are :mod:`~hatidata_auth.services.role_mapping`. An edit of one mapping (or of the
default role) is applied to the set as it stands under the organization's lock (:func:`edit_mappings`), so two edits
at once each keep the other's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..workos import WorkOSClient
from . import fanout_jobs, tenant_admin
from . import role_mapping as mapping_service
from .role_mapping import UNCHANGED, Explanation, MappingSpec, RecomputeResult, RoleChange, Unchanged


@dataclass(frozen=True, slots=True)
class MappingOutcome:
    """A mapping change: the mapping as stored now (``None`` after a delete or a whole-set change), how many
    members were checked and whose role changed, or the recompute job queued for them (too many for one
    transaction: ``members_checked`` is then 0 and ``role_changes`` empty)."""

    mapping: MappingSpec | None
    members_checked: int
    role_changes: tuple[RoleChange, ...]
    queued_job: str | None = None


@dataclass(frozen=True, slots=True)
class MemberRole:
    """Why a member has their role: ``role`` is the role held now (``None`` unless the membership is active)."""

    member_id: str
    role: str | None
    explanation: Explanation


def get_mapping(session: Session, organization_id: str, mapping_id: str) -> MappingSpec:
    """One mapping of the organization by id; 404 ``not_found`` otherwise."""
    return _by_id(mapping_service.list_mappings(session, organization_id), mapping_id)


def _by_id(mappings: list[MappingSpec], mapping_id: str) -> MappingSpec:
    found = next((m for m in mappings if m.id == mapping_id), None)
    if found is None:
        raise AppError("No such role mapping.", status=404, code="not_found")
    return found


def edit_mappings(session: Session, client: WorkOSClient, *, organization_id: str,
                  edit: Callable[[list[MappingSpec]], list[MappingSpec]], cause: Cause,
                  default_role: str | Unchanged | None = UNCHANGED,
                  chunk: int = fanout_jobs.DEFAULT_CHUNK) -> RecomputeResult:
    """Change the mapping set by *edit* (the set as it stands, highest role then priority first -> the set wanted),
    then ``role_mapping.replace_mappings`` (recomputed, or queued above *chunk* members; audited; not committed).
    The set is read under the organization's lock (``role_mapping.locked_mappings``): read before it, the later of
    two edits at once wrote back the set it had read and undid the other (a break-it review: a removed mapping came
    back with a concurrent priority change). *edit* may raise, e.g. 404 for a mapping deleted meanwhile."""
    specs = edit(mapping_service.locked_mappings(session, organization_id))
    return mapping_service.replace_mappings(session, client, organization_id=organization_id, specs=specs,
                                            cause=cause, default_role=default_role, chunk=chunk)


def add_mapping(session: Session, client: WorkOSClient, *, organization_id: str, spec: MappingSpec,
                cause: Cause, chunk: int = fanout_jobs.DEFAULT_CHUNK) -> RecomputeResult:
    """Add one mapping, or replace the one for the same group (kind + identifier), which keeps its id."""
    return edit_mappings(session, client, organization_id=organization_id, cause=cause, chunk=chunk,
                         edit=lambda current: [*(m for m in current if m.key != spec.key), spec])


def update_mapping(session: Session, client: WorkOSClient, *, organization_id: str, mapping_id: str,
                   role: str | None, priority: int | None, cause: Cause,
                   chunk: int = fanout_jobs.DEFAULT_CHUNK) -> tuple[MappingSpec, RecomputeResult]:
    """Change the role or priority of the mapping *mapping_id* as it stands (it keeps its id); the spec written and
    the outcome. 404 ``not_found`` when the organization has no such mapping (also one deleted meanwhile)."""
    written: list[MappingSpec] = []

    def edit(current: list[MappingSpec]) -> list[MappingSpec]:
        written.append(patched(_by_id(current, mapping_id), role=role, priority=priority))
        return [written[0] if m.id == mapping_id else m for m in current]

    result = edit_mappings(session, client, organization_id=organization_id, edit=edit, cause=cause, chunk=chunk)
    return written[0], result


def delete_mapping(session: Session, client: WorkOSClient, *, organization_id: str, mapping_id: str, cause: Cause,
                   chunk: int = fanout_jobs.DEFAULT_CHUNK) -> RecomputeResult:
    """Remove the mapping *mapping_id*; 404 ``not_found`` when the organization has no such mapping (also one
    deleted meanwhile)."""
    def edit(current: list[MappingSpec]) -> list[MappingSpec]:
        gone = _by_id(current, mapping_id)
        return [m for m in current if m.key != gone.key]

    return edit_mappings(session, client, organization_id=organization_id, edit=edit, cause=cause, chunk=chunk)


def set_default_role(session: Session, client: WorkOSClient, *, organization_id: str, default_role: str | None,
                     cause: Cause, chunk: int = fanout_jobs.DEFAULT_CHUNK) -> RecomputeResult:
    """Change the role of members in no mapped group (``None``: no access), keeping the mappings as they stand."""
    return edit_mappings(session, client, organization_id=organization_id, cause=cause, chunk=chunk,
                         default_role=default_role, edit=list)


def patched(current: MappingSpec, *, role: str | None = None, priority: int | None = None) -> MappingSpec:
    """*current* with a new role or priority (the same group, so it keeps its id when stored)."""
    return MappingSpec(current.identifier_kind, current.group_identifier,
                       current.role if role is None else role, current.priority if priority is None else priority)


def outcome(session: Session, organization_id: str, result: RecomputeResult,
            key: tuple[str, str] | None = None) -> MappingOutcome:
    """The outcome of a change, with the stored mapping of *key* (kind, identifier) when given."""
    mapping = None
    if key is not None:
        mapping = next((m for m in mapping_service.list_mappings(session, organization_id) if m.key == key), None)
    return MappingOutcome(mapping, result.checked, tuple(result.changes), result.queued_job)


def explain_member(session: Session, *, organization_id: str, member_id: str) -> MemberRole:
    """Why a member of the organization has their role; 404 for an unknown member."""
    membership, _user = tenant_admin.load_member(session, organization_id, member_id)
    found = mapping_service.explain(session, organization_id=organization_id, user_id=membership.user_id)
    return MemberRole(membership.id, tenant_admin.effective_role(membership), found)
