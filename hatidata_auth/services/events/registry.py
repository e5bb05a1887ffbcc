"""Which handler applies which WorkOS event type: each handler declares its types with :func:`handles`.

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


class DuplicateHandler(RuntimeError):
    """Two handlers claim one event type (raised at import of the second)."""


def _name(handler: Handler) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"


class EventRegistry(Mapping[str, Handler]):
    """Event type (``"dsync.user.updated"``) -> its one handler, in registration order."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handles(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Decorator: register the handler for each of *event_types* (at least one).

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
            return handler

        return register

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
