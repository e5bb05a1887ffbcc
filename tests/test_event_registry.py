"""The event handler registry (issue #12, item 2): one handler per WorkOS event type, declared with
``@handles(...)`` in its family's module; the registry is exactly the documented table; a second handler for
a type fails when its module is imported, naming both handlers."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from workos.events.models.event_schema import EventSchema

from hatidata_auth.services import events
from hatidata_auth.services.events import HANDLERS, DuplicateHandler, handled_event_types, handler_for
from hatidata_auth.services.events.authentication import AUTHENTICATION_EVENT_TYPES
from hatidata_auth.services.events.registry import EventRegistry

DOCS = Path(__file__).resolve().parents[1] / "docs" / "directory-sync.md"
SDK_TYPES = set(EventSchema._DISPATCH)  # every event type WorkOS's spec (the SDK) defines

# Event type prefix -> the one module of the family that may handle it.
FAMILIES = {
    "dsync.user.": "directory_users", "dsync.group.user_": "group_memberships", "dsync.group.": "directory_groups",
    "dsync.": "directories", "connection.": "connections", "organization_membership.": "organization_memberships",
    "organization.": "organizations", "session.": "sessions", "authentication.": "authentication",
}


def documented_types() -> set[str]:
    """The types named in the "Event | Effect" table of docs/directory-sync.md.

    ``a.b/c`` is ``a.b`` and ``a.c``, ``a.b_c/d`` is ``a.b_c`` and ``a.b_d``; ``authentication.*`` is every
    authentication type the SDK defines.
    """
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index("| Event | Effect |"):]
    table = table[:table.index("\n\n")]
    names: set[str] = set()
    for cell in re.findall(r"^\| `([^`]+)`", table, flags=re.MULTILINE):
        if cell == "authentication.*":
            names |= {t for t in SDK_TYPES if t.startswith("authentication.")}
            continue
        first, *others = cell.split("/")
        stem = re.sub(r"[^._]+$", "", first)  # a variant replaces the last word: user_added/removed
        names |= {first, *(stem + other for other in others)}
    return names


def test_the_registry_is_the_documented_table_and_each_type_has_one_handler() -> None:
    assert set(HANDLERS) == documented_types()
    assert handled_event_types() == list(HANDLERS)
    assert len(handled_event_types()) == len(set(handled_event_types()))
    assert set(HANDLERS) <= SDK_TYPES, sorted(set(HANDLERS) - SDK_TYPES)
    assert set(AUTHENTICATION_EVENT_TYPES) == {t for t in SDK_TYPES if t.startswith("authentication.")}
    for event_type in HANDLERS:
        assert handler_for(event_type) is HANDLERS[event_type]


def test_each_handler_lives_in_its_family_module() -> None:
    for event_type, handler in HANDLERS.items():
        family = next(module for prefix, module in FAMILIES.items() if event_type.startswith(prefix))
        assert handler.__module__ == f"{events.__name__}.{family}", (event_type, handler.__module__)


def _import_file(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("event_type", sorted(handled_event_types()))
def test_a_second_handler_for_a_type_fails_at_import_naming_both(event_type: str, tmp_path: Path) -> None:
    plugin = tmp_path / "late_handlers.py"
    plugin.write_text("from hatidata_auth.services.events import handles\n\n\n"
                      f"@handles('organization.never_sent', {event_type!r}, revokes=False)\n"
                      "def shadow(ctx, data):\n    pass\n", encoding="utf-8")
    original = HANDLERS[event_type]
    before = dict(HANDLERS)
    with pytest.raises(DuplicateHandler) as raised:
        _import_file(plugin)
    message = str(raised.value)
    assert repr(event_type) in message
    assert f"{original.__module__}.{original.__qualname__}" in message
    assert "late_handlers.shadow" in message
    assert dict(HANDLERS) == before  # nothing of the failed module was registered
    assert handler_for("organization.never_sent") is None


def _handler(number: int) -> Any:
    def handler(ctx: Any, data: dict[str, Any]) -> None:
        pass

    handler.__qualname__ = f"handler_{number}"
    return handler


@given(st.lists(st.lists(st.sampled_from(["dsync.user.created", "connection.deleted", "session.revoked",
                                          "organization.updated", "authentication.mfa_failed"]),
                         min_size=1, max_size=3), max_size=6))
def test_registering_succeeds_exactly_when_no_type_is_taken(batches: list[list[str]]) -> None:
    registry = EventRegistry()
    expected: dict[str, Any] = {}
    for number, types in enumerate(batches):
        handler = _handler(number)
        clash = any(t in expected for t in types) or len(set(types)) < len(types)
        if clash:
            with pytest.raises(DuplicateHandler, match=f"handler_{number}"):
                registry.handles(*types, revokes=False)(handler)
        else:
            assert registry.handles(*types, revokes=False)(handler) is handler
            expected.update(dict.fromkeys(types, handler))
        assert dict(registry) == expected
        assert list(registry) == list(expected)


def test_handles_needs_a_type() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EventRegistry().handles(revokes=False)


def test_a_handler_must_say_whether_it_takes_access_away() -> None:
    with pytest.raises(TypeError, match="revokes"):
        EventRegistry().handles("dsync.user.created")  # type: ignore[call-arg]
