"""Role mappings as the API manages them: one mapping by id, a change's outcome, why a member has their role.

The engine and its writes are :mod:`~hatidata_auth.services.role_mapping`; this module looks mappings up by id
and gathers what a view shows after a change.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..errors import AppError
from . import role_mapping as mapping_service
from . import tenant_admin
from .role_mapping import Explanation, MappingSpec, RecomputeResult, RoleChange


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
    found = next((m for m in mapping_service.list_mappings(session, organization_id) if m.id == mapping_id), None)
    if found is None:
        raise AppError("No such role mapping.", status=404, code="not_found")
    return found


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
