"""The flask-smorest ``Api`` of HatiData Auth: OpenAPI 3 at ``/api/openapi.json``, one error shape.

Kept free of application imports so :mod:`hatidata_auth.extensions` can create the ``Api`` unbound.
"""

from __future__ import annotations

from typing import Any

from flask_smorest import Api
from marshmallow import Schema, fields

API_CONFIG: dict[str, Any] = {
    "API_TITLE": "HatiData Auth Admin API",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "API_SPEC_OPTIONS": {
        "info": {"description": "Administration of one HatiData organization: settings, members, role mappings, "
                                "sessions, API keys, SSO and directory status, the webhook inbox and the audit "
                                "log. Every resource is scoped to the caller's organization."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
        "components": {"securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "An API key (`hd_live_…`) or a WorkOS access token."},
            "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "hatidata_session",
                           "description": "The dashboard's sealed session cookie (unsafe methods also need "
                                          "`X-CSRFToken`)."},
        }},
    },
}


class ErrorBodySchema(Schema):
    """``error`` of every error answer."""

    code = fields.String(required=True, metadata={"description": "Machine-readable error code."})
    message = fields.String(required=True, metadata={"description": "What went wrong, for people."})
    details = fields.Dict(required=True, metadata={"description": "More about the error; for validation errors "
                                                                  "`fields` maps each field to its messages."})
    request_id = fields.String(metadata={"description": "The request id (also in `X-Request-ID`)."})


class ErrorSchema(Schema):
    """The one error shape: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorBodySchema, required=True)


class HatiApi(Api):
    """``Api`` documenting our error shape and leaving error handling to the app's handlers."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        """The app's handlers (``errors.py`` and :mod:`hatidata_auth.api`) answer every error."""
