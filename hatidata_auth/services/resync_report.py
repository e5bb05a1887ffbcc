"""What a full resync found different from WorkOS and fixed (:mod:`services.reconcile`), as it reports it and as
its cursor keeps it between pages (``resync_state.restore_counts`` copies it back)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ResyncReport:
    """What a full resync found different from WorkOS, and fixed."""

    organization_id: str
    directory_id: str | None
    users_seen: int = 0
    groups_seen: int = 0
    users_created: int = 0
    users_updated: int = 0
    users_deleted: int = 0
    groups_created: int = 0
    groups_updated: int = 0
    groups_deleted: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    access_repaired: int = 0
    objects_refused: int = 0  # listed objects of another directory or organization, not applied
    people_repaired: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        """How many differences were found (and fixed)."""
        return (self.users_created + self.users_updated + self.users_deleted + self.groups_created
                + self.groups_updated + self.groups_deleted + self.memberships_added + self.memberships_removed
                + self.access_repaired + self.people_repaired)

    def note(self, text: str) -> None:
        """Keep a few examples of what differed."""
        if len(self.examples) < 20:
            self.examples.append(text)

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {**asdict(self), "differences": self.differences}

    def saved(self) -> dict[str, Any]:
        """The counters and examples, as the run's cursor keeps them (a copy)."""
        return {k: v for k, v in asdict(self).items() if k not in ("organization_id", "directory_id", "seconds")}
