"""The admin REST API under ``/api/v1`` (flask-smorest), its OpenAPI document and the docs page.

``init_api(app)`` binds :data:`hatidata_auth.extensions.api`, registers every resource blueprint, the docs
page at ``/api/docs`` (Swagger UI served from the ``swagger-ui-bundle`` package, no CDN) and the handler that
turns request-validation errors into the uniform error shape naming the fields.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import UnprocessableEntity

from .. import inputs
from ..errors import error_response, html_error_page, wants_html
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
    if wants_html():  # a person, outside /api/: the page, naming the fields
        names = ", ".join(sorted(fields)) or "the request"
        return html_error_page(422, "validation_error", f"Check {names}.", details)
    if locations:
        details["location"] = locations[0] if len(locations) == 1 else locations
    return error_response(422, "validation_error", "The request is invalid.", details,
                          headers=data.get("headers"))


def init_api(app: Flask) -> None:
    """Bind the API and register its blueprints (idempotent per app)."""
    from ..extensions import api, csrf
    from . import (
        alerts_api,
        audit_api,
        audit_exports_api,
        audit_streams_api,
        cert_rotation_api,
        docs,
        identity_api,
        inbox_api,
        members_api,
        organization_api,
        policy_api,
        role_mappings_api,
        sign_ins_api,
    )

    for key, value in API_CONFIG.items():
        app.config.setdefault(key, value)
    api.init_app(app)
    for module in (identity_api, policy_api, organization_api, role_mappings_api, inbox_api, members_api,
                   alerts_api, audit_api, audit_exports_api, audit_streams_api, sign_ins_api, cert_rotation_api):
        for blp in module.BLUEPRINTS:
            # CSRF is enforced per request by the identity layer (cookie callers only).
            csrf.exempt(blp)
            api.register_blueprint(blp, url_prefix="/api/v1")
    app.register_blueprint(docs.bp)
    app.register_error_handler(UnprocessableEntity, _validation_error)
    # An embedding app keeps its own routes as they are; create_app already checks every route.
    inputs.init_app(app, prefixes=("/api/", "/auth/"))
