"""The directory's synced groups for the role-mapping step: pick, don't type.

Knows nothing of Flask. The rules (``docs/plugins.md``): the step lists the organization's synced groups by name and,
where the IdP sends object ids (Entra), the id beside it; a preset row with no identifier is filled from the synced
group of the same name; an identifier that matches no synced group is flagged by name (with the nearest synced
group's, when one is close) and saved only once the admin confirms it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..idp import RoleMappingPreset
from ..models import DirectoryGroup


@dataclass(frozen=True, slots=True)
class SyncedGroup:
    """One group the directory synced: what the admin reads (name), and what a mapping stores (identifier)."""

    name: str
    identifier: str
    idp_id: str | None

    @property
    def label(self) -> str:
        """The option text: the name, and the identifier beside it when it differs (Entra's object id)."""
        return self.name if self.identifier == self.name else f"{self.name} ({self.identifier})"


def _identifier(group: DirectoryGroup, kind: str) -> str | None:
    if kind == "name":
        return group.name
    if kind == "object_id":
        return group.idp_id.lower() if group.idp_id else None
    if kind == "directory_group_id":
        return group.workos_id
    return None


def synced_groups(session: Session, organization_id: str, kind: str) -> tuple[SyncedGroup, ...]:
    """The organization's live directory groups, by name, with their identifier of *kind*."""
    rows = session.scalars(select(DirectoryGroup).where(DirectoryGroup.organization_id == organization_id,
                                                        DirectoryGroup.deleted_at.is_(None))
                           .order_by(DirectoryGroup.name, DirectoryGroup.workos_id)).all()
    found: dict[str, SyncedGroup] = {}
    for row in rows:
        identifier = _identifier(row, kind)
        if identifier and identifier not in found:
            found[identifier] = SyncedGroup(row.name, identifier, row.idp_id)
    return tuple(found.values())


def preset_rows(preset: RoleMappingPreset, groups: tuple[SyncedGroup, ...]) -> list[dict[str, Any]]:
    """The preset's rows, each identifier the preset leaves blank filled from the synced group of that name."""
    by_name = {g.name.casefold(): g for g in groups}
    rows = []
    for m in preset.mappings:
        identifier = m.identifier
        if not identifier and m.label.casefold() in by_name:
            identifier = by_name[m.label.casefold()].identifier
        rows.append({"label": m.label, "identifier": identifier or "", "role": m.role})
    return rows


def unmatched(identifiers: list[str], groups: tuple[SyncedGroup, ...]) -> dict[str, str]:
    """Each identifier matching no synced group -> the message naming it (none when nothing is synced)."""
    if not groups:
        return {}
    known = {g.identifier for g in groups}
    names = {g.identifier: g.name for g in groups}
    messages = {}
    for identifier in identifiers:
        if identifier in known or identifier.lower() in known:
            continue
        close = difflib.get_close_matches(identifier, list(known), n=1, cutoff=0.75)
        hint = f" Did you mean “{names[close[0]]}”?" if close else ""
        messages[identifier] = f"“{identifier}” matches no synced group.{hint}"
    return messages
