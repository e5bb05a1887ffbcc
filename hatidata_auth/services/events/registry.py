"""Which handler applies which WorkOS event type: each handler declares its types with :func:`handles`, and
whether an event can take access away (``revokes=``, required: a new handler cannot forget to say it).

A type has exactly one handler. Registering a second one for the same type raises
:class:`DuplicateHandler` when the second module is imported, naming both handlers, so a clash never
reaches a running worker. The registry is complete once :mod:`services.events` is imported (its
``__init__`` imports every family module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .context import EventContext

Handler = Callable[[EventContext, dict[str, Any]], None]
Revokes = bool | Callable[[str, Mapping[str, Any]], bool]
"""``True``/``False``, or ``(event type, data) -> bool`` when it depends on the event (a user updated to a state
other than ``active``)."""


class DuplicateHandler(RuntimeError):
    """Two handlers claim one event type (raised at import of the second)."""


def _name(handler: Handler) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"


class EventRegistry(Mapping[str, Handler]):
    """Event type (``"dsync.user.updated"``) -> its one handler, in registration order."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._revokes: dict[str, Revokes] = {}
        self._snapshots: set[str] = set()

    def handles(self, *event_types: str, revokes: Revokes,
                snapshot: bool = False) -> Callable[[Handler], Handler]:
        """Decorator: register the handler for each of *event_types* (at least one), with whether applying such an
        event can take access away (deactivate or delete a member, lower a role, revoke a session or key):
        those are claimed before any other and, when they concern one person, applied by the request that
        acknowledges them (:func:`hatidata_auth.inbox_runtime.acknowledged`).

        *snapshot*: each event of these types carries its object's whole state, versioned by ``data.updated_at``,
        and its handler reaches the same state from any older one, as delivery out of order requires: a run of
        them pending on one entity key may be applied as its newest alone (``services.inbox_coalesce``).

        Raises :class:`DuplicateHandler` if a type already has a handler (or is named twice here); nothing
        is registered then.
        """
        if not event_types:
            raise ValueError("handles() needs at least one event type")

        def register(handler: Handler) -> Handler:
            for index, event_type in enumerate(event_types):
                other = self._handlers.get(event_type)
                if other is None and event_type in event_types[:index]:
                    other = handler
                if other is not None:
                    raise DuplicateHandler(f"{event_type!r} is handled by both {_name(other)} and {_name(handler)}")
            for event_type in event_types:
                self._handlers[event_type] = handler
                self._revokes[event_type] = revokes
                if snapshot:
                    self._snapshots.add(event_type)
            return handler

        return register

    def revokes(self, event_type: str, data: Mapping[str, Any]) -> bool:
        """Whether this event can take access away, as its handler declared (``False`` for unhandled types)."""
        declared = self._revokes.get(event_type, False)
        return declared(event_type, data) if callable(declared) else declared

    def snapshot(self, event_type: str) -> bool:
        """Whether events of *event_type* are whole snapshots of their object (declared ``snapshot=True``)."""
        return event_type in self._snapshots

    def revoking_types(self) -> list[str]:
        """The types that can take access away (declared ``True`` or by a predicate)."""
        return [event_type for event_type, declared in self._revokes.items() if declared is not False]

    def __getitem__(self, event_type: str) -> Handler:
        return self._handlers[event_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


HANDLERS = EventRegistry()
handles = HANDLERS.handles


def handler_for(event_type: str) -> Handler | None:
    """The handler of an event type, or ``None`` when the type is stored and ignored."""
    return HANDLERS.get(event_type)


def handled_event_types() -> list[str]:
    """The Events API filter: every type we apply, each named exactly (WorkOS documents no wildcards)."""
    return list(HANDLERS)
