"""What every ``/api/v1`` resource shares: the error schema, cursor pagination and the permission guard."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from .. import inputs, step_up
from ..conflict_reruns import rerun_on_conflict
from ..errors import AppError
from ..identity import login_required, require_permission
from ..services import fanout_jobs, paging
from .spec import ErrorSchema  # noqa: F401 - re-exported

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_KEY = paging.MAX_KEY_LENGTH


class Timestamp(fields.String):
    """An ISO 8601 timestamp: a service's ``datetime`` written with ``isoformat()``, a string as it is."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return value.isoformat() if isinstance(value, datetime) else super()._serialize(value, attr, obj, **kwargs)


def timestamp(**kwargs: Any) -> fields.String:
    """An ISO 8601 timestamp (:class:`Timestamp`)."""
    return Timestamp(metadata={"format": "date-time"}, **kwargs)


class Instant(fields.AwareDateTime):
    """An ISO 8601 instant with its offset, loaded as UTC; a 422 naming the field when its UTC form (or a day's
    arithmetic on it) leaves the calendar (:func:`~hatidata_auth.inputs.utc_instant`). Every datetime input."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return inputs.utc_instant(parsed)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class PageArgsSchema(Schema):
    """Cursor pagination arguments, accepted by every list."""

    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT),
                           metadata={"description": f"Items per page (1-{MAX_LIMIT})."})
    cursor = fields.String(load_default=None, validate=validate.Length(max=512),
                           metadata={"description": "``next_cursor`` of the previous page."})


def page_schema(item: type[Schema], name: str, next_cursor: str | None = None) -> type[Schema]:
    """A ``{"data": [item], "next_cursor"}`` envelope schema for *item* (*next_cursor*: its description, when the
    list's paging needs more words than the default)."""
    return cast(type[Schema], Schema.from_dict({
        "data": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(required=True, allow_none=True, metadata={
            "description": next_cursor or "Pass as ``cursor`` for the next page; ``null`` on the last page."}),
    }, name=name))


def encode_cursor(value: Any) -> str:
    """An opaque cursor for a sort key."""
    return base64.urlsafe_b64encode(json.dumps([value], separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[int] | type[str] | None = None, *,
                  max_length: int = MAX_CURSOR_KEY) -> Any:
    """The sort key of an opaque cursor: an ``int`` in the signed 64-bit range or a ``str`` of at most
    *max_length* storable characters, of type *kind* when given. Anything else (a bool, a float, a huge
    integer, a NUL, a lone surrogate, malformed base64/JSON) is a 422 naming ``cursor``."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = inputs.load_json(raw, max_depth=1)
        if not isinstance(value, list) or len(value) != 1:
            raise ValueError("bad cursor")
        key = value[0]
        if isinstance(key, bool) or not isinstance(key, kind or (str, int)):
            raise ValueError("bad cursor")
        if isinstance(key, int) and not inputs.INT64_MIN <= key <= inputs.INT64_MAX:
            raise ValueError("cursor out of range")
        if isinstance(key, str) and (len(key) > max_length or inputs.unstorable(key)):
            raise ValueError("cursor not storable")
        return key
    except (ValueError, binascii.Error, inputs.InvalidJSON) as exc:
        raise validation_error({"cursor": ["Not a valid cursor."]}, location="query") from exc


def validation_error(fields_: dict[str, list[str]], *, location: str = "json",
                     message: str = "The request is invalid.") -> AppError:
    """A 422 naming the fields at fault."""
    return AppError(message, status=422, code="validation_error",
                    details={"fields": fields_, "location": location})


def page_request(args: dict[str, Any], kind: paging.KeyKind) -> paging.PageRequest:
    """The page the arguments ask for, its cursor decoded as a key of *kind* (a 422 naming ``cursor`` otherwise)."""
    after = decode_cursor(args.get("cursor"), kind.type, max_length=kind.longest)
    if after is not None and not kind.holds(after):  # past the column's range (PostgreSQL's INTEGER: 32-bit)
        raise validation_error({"cursor": ["Not a valid cursor."]}, location="query")
    return paging.PageRequest(after=after, limit=int(args.get("limit") or DEFAULT_LIMIT))


def page_body(page: paging.Page[T], present: Callable[[T], Any] | None = None) -> dict[str, Any]:
    """The ``{"data", "next_cursor"}`` envelope of a service's page, each item presented by *present* (without
    it, the items as they are: the response schema reads a frozen value's attributes)."""
    return {"data": list(page.items) if present is None else [present(item) for item in page.items],
            "next_cursor": None if page.next_key is None else encode_cursor(page.next_key)}


def guard(blp: Blueprint, *permissions: str) -> Callable[[F], F]:
    """Require a caller holding every permission (API keys: within their scopes); documents it. A write runs again
    when the database rolls it back to break a lock conflict (``conflict_reruns.rerun_on_conflict``)."""

    def decorator(view: F) -> F:
        view = rerun_on_conflict(view)
        protected = require_permission(*permissions)(view) if permissions else login_required(view)
        description = ("Requires " + ", ".join(f"`{p}`" for p in permissions) + "."
                       if permissions else "Any signed-in member or API key.")
        if not step_up.SENSITIVE_PERMISSIONS.isdisjoint(permissions):
            description += (" A change also needs a sign-in within the organization's step-up window (else 401 "
                            "`reauthentication_required`); API keys act by their scopes.")
        return cast(F, blp.doc(**{"x-permissions": list(permissions), "description": description})(protected))

    return decorator


def fanout_chunk() -> int:
    """``HATIDATA_FANOUT_CHUNK``: the members a request may recompute; more are queued as a recompute job."""
    return fanout_jobs.chunk_size(current_app.config.get("HATIDATA_FANOUT_CHUNK"))
