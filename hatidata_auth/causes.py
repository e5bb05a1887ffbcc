"""Values that cross layers: who acts, and from where."""

from __future__ import annotations

from dataclasses import dataclass


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
