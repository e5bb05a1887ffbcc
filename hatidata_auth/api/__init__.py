"""The admin REST API under ``/api/v1`` (flask-smorest), its OpenAPI document and the docs page.

``init_api(app)`` binds :data:`hatidata_auth.extensions.api`, registers every resource blueprint, the docs
page at ``/api/docs`` (Swagger UI served from the ``swagger-ui-bundle`` package, no CDN) and the handler that
turns request-validation errors into the uniform error shape naming the fields.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import UnprocessableEntity

from ..errors import error_response
from .spec import API_CONFIG


def _validation_error(exc: UnprocessableEntity) -> Response:
    data: dict[str, Any] = getattr(exc, "data", None) or {}
    messages = data.get("messages") or {}
    fields: dict[str, Any] = {}
    locations = []
    for location, errors in messages.items():
        locations.append(location)
        if isinstance(errors, dict):
            for name, problems in errors.items():
                fields[str(name)] = problems
        else:
            fields["_body"] = errors
    details: dict[str, Any] = {"fields": fields}
    if locations:
        details["location"] = locations[0] if len(locations) == 1 else locations
    return error_response(422, "validation_error", "The request is invalid.", details,
                          headers=data.get("headers"))


def _nul_fields(value: Any, path: str = "") -> list[str]:
    """Paths of the strings (or keys) holding a NUL character, which no database column can store."""
    if isinstance(value, str):
        return [path or "_body"] if "\x00" in value else []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                found.append(child)
            found += _nul_fields(item, child)
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _nul_fields(item, f"{path}.{i}" if path else str(i))]
    return []


def _refuse_nul_characters() -> Response | None:
    """422 naming the field when a query argument or JSON string carries a NUL character."""
    from flask import request

    if not request.path.startswith("/api/v1/"):
        return None
    query = [name for name, value in request.args.items(multi=True) if "\x00" in name or "\x00" in value]
    body = _nul_fields(request.get_json(silent=True)) if request.is_json else []
    if not query and not body:
        return None
    message = ["Must not contain NUL characters."]
    return error_response(422, "validation_error", "The request is invalid.",
                          {"fields": {name: message for name in query + body},
                           "location": "query" if query else "json"})


def init_api(app: Flask) -> None:
    """Bind the API and register its blueprints (idempotent per app)."""
    from ..extensions import api, csrf
    from . import alerts_api, audit_api, docs, identity_api, members_api, organization_api

    for key, value in API_CONFIG.items():
        app.config.setdefault(key, value)
    api.init_app(app)
    for module in (identity_api, organization_api, members_api, alerts_api, audit_api):
        for blp in module.BLUEPRINTS:
            # CSRF is enforced per request by the identity layer (cookie callers only).
            csrf.exempt(blp)
            api.register_blueprint(blp, url_prefix="/api/v1")
    app.register_blueprint(docs.bp)
    app.register_error_handler(UnprocessableEntity, _validation_error)
    app.before_request(_refuse_nul_characters)
