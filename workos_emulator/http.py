"""Request parsing helpers shared by the API blueprints."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest

from .errors import ApiError, invalid_params


def json_body(*, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse the JSON object body (empty body -> ``{}``); 400 on malformed JSON, 422 on missing fields."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = request.get_json(force=True, silent=False)
        except BadRequest:
            raise ApiError(400, "Request body is not valid JSON.", "invalid_json") from None
    if not isinstance(data, dict):
        raise invalid_params("Request body must be a JSON object.", "body")
    missing = [f for f in required if data.get(f) in (None, "")]
    if missing:
        raise invalid_params(f"Missing required parameter(s): {', '.join(missing)}.", *missing)
    return data


def require_str(data: dict[str, Any], name: str) -> str:
    """A required non-empty string field."""
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_params(f"{name} is required and must be a non-empty string.", name)
    return value


def opt_str(data: dict[str, Any], name: str) -> str | None:
    """An optional string field (``None`` when absent/null); 422 when of the wrong type."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_params(f"{name} must be a string.", name)
    return value


def csv_arg(name: str) -> list[str]:
    """A comma-joined (or repeated) query parameter as a list."""
    out: list[str] = []
    for raw in request.args.getlist(name) + request.args.getlist(f"{name}[]"):
        out.extend(x.strip() for x in raw.split(",") if x.strip())
    return out
