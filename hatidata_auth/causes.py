"""Values that cross layers: who acts, from where, and why (the :class:`Cause` every audited change carries)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused a change: a user, an API key, WorkOS (webhooks), or the system itself."""

    type: str
    id: str | None = None
    email: str | None = None

    @classmethod
    def system(cls, name: str = "hatidata") -> Actor:
        """The service acting on its own (seeding, reconciliation, CLI)."""
        return cls(type="system", id=name)

    @classmethod
    def workos(cls) -> Actor:
        """WorkOS, acting for the customer's IdP (webhooks, Events API)."""
        return cls(type="workos", id="workos")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Where a request came from; empty outside a request."""

    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_REQUEST = RequestInfo()


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a change happens: who acts, from which request, for which WorkOS event, and the reason given.

    Services take one ``cause`` instead of ``actor``/``request``/``source_event_id``/``reason`` parameters and
    hand it on; :func:`hatidata_auth.services.audit.record` writes it into the audit event.
    """

    actor: Actor
    request: RequestInfo = NO_REQUEST
    source_event_id: str | None = None
    reason: str | None = None

    @classmethod
    def by(cls, actor: Actor, request: RequestInfo = NO_REQUEST, *, reason: str | None = None) -> Cause:
        """A person or key acting (through a request, when there is one)."""
        return cls(actor, request, None, reason)

    @classmethod
    def from_event(cls, event_id: str | None, *, reason: str | None = None, actor: Actor | None = None) -> Cause:
        """WorkOS (or *actor*) acting through the event *event_id* (a webhook, the Events API, a resync)."""
        return cls(actor or Actor.workos(), NO_REQUEST, event_id, reason)

    @classmethod
    def system(cls, reason: str | None = None, *, name: str = "hatidata") -> Cause:
        """The service acting on its own (seeding, reconciliation, the CLI)."""
        return cls(Actor.system(name), NO_REQUEST, None, reason)

    def with_reason(self, reason: str) -> Cause:
        """The same cause, giving *reason*."""
        return replace(self, reason=reason)

    def with_event(self, event_id: str | None) -> Cause:
        """The same cause, through the WorkOS event *event_id*."""
        return replace(self, source_event_id=event_id)

    def to_dict(self) -> dict[str, Any]:
        """The cause as JSON-able data, for work stored now and done later (an inbox job); :meth:`from_dict`
        reads it back whole."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cause:
        """The cause :meth:`to_dict` stored (raises ``KeyError`` / ``TypeError`` on another shape)."""
        return cls(Actor(**data["actor"]), RequestInfo(**data["request"]), data["source_event_id"], data["reason"])
