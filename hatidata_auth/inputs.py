"""Input limits checked before any view runs: bad input is a 4xx, never a 500.

One ``before_request`` hook (:func:`check_request_input`) refuses what no view and no database column can take:

* a JSON body (``application/json`` or ``+json``) larger than ``HATIDATA_MAX_JSON_BYTES`` (413), that nests
  deeper than ``HATIDATA_MAX_JSON_DEPTH`` or holds a number that is not finite (``NaN``, ``1e400``) or past
  Python's digit limit (400 ``invalid_json``; a mere syntax error or invalid UTF-8 is left to the view, which
  answers 400 its own way), or carries a string or key with a NUL character or a lone surrogate, or an
  integer outside the signed 64-bit range (422 ``validation_error`` naming the field);
* a query argument or form field whose name or value holds a NUL character or a lone surrogate (422);
* a header holding a NUL character (400);
* a path segment (a URL variable such as ``<key_id>``) longer than :data:`MAX_PATH_SEGMENT` characters or holding
  a NUL character or a lone surrogate (404: no resource has such an identifier).

A view marked with :func:`checks_own_body` (the WorkOS webhook, which must check a signature on the raw body
first) gets its body unread and applies the same JSON rules itself with :func:`load_storable_json`, so bytes from
an unauthenticated sender are never parsed.

The JSON checks run on the parsed value with an explicit stack, so no input depth reaches Python's recursion
limit; once a body passed, every later parser (webargs, ``request.get_json``) sees bounded, storable data.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, request

from .config import DEFAULTS
from .errors import AppError

MAX_JSON_DEPTH: int = DEFAULTS["HATIDATA_MAX_JSON_DEPTH"]
MAX_JSON_BYTES: int = DEFAULTS["HATIDATA_MAX_JSON_BYTES"]
MAX_PATH_SEGMENT = 255
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A NUL (no PostgreSQL text column stores it) or a UTF-16 surrogate half (not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What a JSON text must hold for its value to hold an unstorable string or integer: a NUL or surrogate can only be
# written as a \u escape (strict UTF-8 decoding refuses encoded surrogates, strict JSON raw control characters),
# an integer past 64 bits takes at least 19 digits. A text without any is storable without walking its value.
_MAYBE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|[0-9]{19}")
NUL_MESSAGE = "Must not contain NUL characters."
SURROGATE_MESSAGE = "Must not contain unpaired surrogates."
_INSTALLED = "hatidata_input_limits"
_BODY_HEADERS = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})  # the two headers WSGI keeps without HTTP_
# One day inside the calendar Python and the databases share, so that comparing or adding a day never overflows.
INSTANT_MIN = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
INSTANT_MAX = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
INSTANT_MESSAGE = f"Must be between {INSTANT_MIN.date().isoformat()} and {INSTANT_MAX.date().isoformat()} UTC."


class InvalidJSON(AppError):
    """The body is not bounded, well-formed UTF-8 JSON (400)."""

    status = 400
    code = "invalid_json"


class NotJSON(InvalidJSON):
    """A syntax error or invalid UTF-8 (within the depth bound): ``__cause__`` is the parser's error."""


class PayloadTooLarge(AppError):
    """The body is larger than the configured limit (413)."""

    status = 413
    code = "payload_too_large"


class UnstorableValue(AppError):
    """A value no column can store; ``details`` name the fields and their location (422)."""

    status = 422
    code = "validation_error"


def unstorable(text: str) -> bool:
    """Whether *text* holds a NUL character or a lone surrogate."""
    return _UNSTORABLE.search(text) is not None


def utc_instant(value: datetime) -> datetime:
    """*value* (timezone-aware) as UTC, or ``ValueError`` (:data:`INSTANT_MESSAGE`) when it, or a day's
    arithmetic on it, falls outside years 1-9999: ``0001-01-01T00:00:00+14:00`` parses, converting it cannot."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("Must carry a timezone offset.")
    try:
        instant = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(INSTANT_MESSAGE) from exc
    if not INSTANT_MIN <= instant <= INSTANT_MAX:
        raise ValueError(INSTANT_MESSAGE)
    return instant


def _problem(text: str) -> str:
    return NUL_MESSAGE if "\x00" in text else SURROGATE_MESSAGE


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def load_json(data: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse strict UTF-8 JSON no deeper than *max_depth*; raises :class:`InvalidJSON`."""
    value = _parse(data, max_depth)
    if isinstance(value, MalformedJSON):
        raise NotJSON("The body is not valid UTF-8 JSON.") from value.error
    return value


class MalformedJSON:
    """A syntax error (or invalid UTF-8) within the depth bound: harmless, each view answers it its own way."""

    def __init__(self, error: ValueError) -> None:
        self.error = error


def _parse(data: bytes, max_depth: int) -> Any:
    too_deep = InvalidJSON(f"The JSON body nests deeper than {max_depth} levels.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return MalformedJSON(exc)
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise too_deep from exc
    except json.JSONDecodeError as exc:
        # A deeper caller stack could hit the recursion limit before this syntax error: bound the prefix too.
        if _raw_depth_exceeds(text[:exc.pos], max_depth):
            raise too_deep from exc
        return MalformedJSON(exc)
    except ValueError as exc:  # NaN/Infinity, a float that overflows, an integer past the digit limit
        raise InvalidJSON("The body holds a number that is not finite or too long.") from exc
    # A value nests no deeper than its text has brackets (those in strings only add to the count): most bodies need
    # no walk.
    if text.count("{") + text.count("[") > max_depth and _depth_exceeds(value, max_depth):
        raise too_deep
    return value


def _raw_depth_exceeds(text: str, max_depth: int) -> bool:
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def bad_json_fields(value: Any) -> dict[str, list[str]]:
    """Dotted paths (``"_body"`` for the root) of the unstorable strings, keys and numbers, with the problem."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        name = path or "_body"
        if isinstance(item, str):
            if unstorable(item):
                found.setdefault(name, []).append(_problem(item))
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                found.setdefault(name, []).append("Number out of range.")
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if unstorable(key):
                    found.setdefault(child_path, []).append(_problem(key))
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(item))
    return {_printable(k): v for k, v in found.items()}


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode() if unstorable(name) else name


def _bad_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    return {_printable(name): [_problem(name + value)] for name, value in pairs
            if unstorable(name) or unstorable(value)}


def _refuse(fields: dict[str, list[str]], location: str) -> UnstorableValue:
    return UnstorableValue("The request is invalid.", details={"fields": fields, "location": location})


_OWN_BODY = "_hatidata_checks_own_body"


def checks_own_body(view: Any) -> Any:
    """Mark *view* as checking its body itself (JSON with :func:`load_storable_json`): the hook leaves the body
    unread, whatever its content type (headers, query and path are still checked)."""
    setattr(view, _OWN_BODY, True)
    return view


def load_storable_json(data: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """:func:`load_json` plus the hook's value rules: raises :class:`NotJSON` (a syntax error or invalid UTF-8),
    :class:`InvalidJSON` (too deep, a number that is not finite) or :class:`UnstorableValue` (a NUL, a lone
    surrogate, an integer past 64 bits; 422 naming the fields, ``location`` ``json``)."""
    value = load_json(data, max_depth=max_depth)
    fields = bad_json_fields(value) if _MAYBE_UNSTORABLE.search(data) else None
    if fields:
        raise UnstorableValue("The request is invalid.", details={"fields": fields, "location": "json"})
    return value


def _checks_own_body() -> bool:
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, _OWN_BODY, False))


def check_request_input() -> None:
    """Refuse input that no view or column can take (see the module docstring); raises an :class:`AppError`."""
    from flask import current_app

    prefixes = current_app.extensions[_INSTALLED]
    if request.routing_exception is not None or (prefixes and not request.path.startswith(prefixes)):
        return  # routing answers 404/405 itself
    for value in (request.view_args or {}).values():
        if isinstance(value, str) and (len(value) > MAX_PATH_SEGMENT or unstorable(value)):
            raise AppError("No such resource.", status=404, code="not_found")
    environ = request.environ
    # The environ's header entries, read as they are: what request.headers would yield, without building it.
    if any(isinstance(value, str) and "\x00" in value for key, value in environ.items()
           if key.startswith("HTTP_") or key in _BODY_HEADERS):
        raise AppError("A header holds a NUL character.", status=400, code="bad_request")
    if environ.get("QUERY_STRING"):
        query = _bad_pairs(request.args.items(multi=True))
        if query:
            raise _refuse(query, "query")
    if not environ.get("CONTENT_TYPE"):
        return  # neither JSON nor a form: no body is parsed from it
    if _checks_own_body():
        return  # its body is read only after the view authenticated it (whatever its content type)
    if request.is_json:
        _check_json_body()
    elif request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = _bad_pairs(request.form.items(multi=True))
        if form:
            raise _refuse(form, "form")


def _check_json_body() -> None:
    from flask import current_app

    limit = int(current_app.config.get("HATIDATA_MAX_JSON_BYTES") or MAX_JSON_BYTES)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The JSON body is larger than {limit} bytes.")
    data = request.stream.read(limit + 1)  # bounded even without a Content-Length (chunked)
    if len(data) > limit:
        raise PayloadTooLarge(f"The JSON body is larger than {limit} bytes.")
    # Put the body back: views reading the raw stream (webhook signatures) and get_data() both still see it.
    request.stream = io.BytesIO(data)
    if not data.strip():
        return
    depth = int(current_app.config.get("HATIDATA_MAX_JSON_DEPTH") or MAX_JSON_DEPTH)
    value = _parse(data, depth)
    if isinstance(value, MalformedJSON):
        if isinstance(value.error, UnicodeDecodeError):
            # Not left to the view: Flask's get_json decodes bytes as JSON's detected encoding with surrogatepass
            # (UTF-16, UTF-32, an encoded surrogate), which would hand the view values this hook never checked.
            raise NotJSON("The body is not valid UTF-8 JSON.") from value.error
        return  # a syntax error: each view answers it its own way
    fields = bad_json_fields(value) if _MAYBE_UNSTORABLE.search(data) else None
    if fields:
        raise UnstorableValue("The request is invalid.", details={"fields": fields, "location": "json"})


def init_app(app: Flask, *, prefixes: tuple[str, ...] = ()) -> None:
    """Check the input of every request (or only under *prefixes*); once per app, the first call wins."""
    if _INSTALLED in app.extensions:
        return
    app.extensions[_INSTALLED] = prefixes
    app.before_request(check_request_input)
