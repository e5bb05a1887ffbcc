"""Flask extensions, created unbound and initialised by :func:`hatidata_auth.create_app`."""

from __future__ import annotations

from typing import Any

from flask import current_app, has_app_context
from flask_caching import Cache
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from .api.spec import HatiApi
from .unit_of_work import INVALIDATOR, AppSession


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


class FlaskAppSession(FlaskSession, AppSession):
    """``db.session``: Flask-SQLAlchemy's session (bind routing) with the unit of work of
    :class:`~hatidata_auth.unit_of_work.AppSession`; takes its cache invalidator from the current app
    (``app.extensions[INVALIDATOR]``, set by ``HatiDataAuth``)."""

    def __init__(self, db: SQLAlchemy, **kwargs: Any) -> None:
        if has_app_context():
            kwargs.setdefault("invalidator", current_app.extensions.get(INVALIDATOR))
        super().__init__(db, **kwargs)


db = SQLAlchemy(model_class=Base, session_options={"class_": FlaskAppSession})
migrate = Migrate()
cache = Cache()
csrf = CSRFProtect()
# The admin REST API (flask-smorest); its blueprints are registered by hatidata_auth.api.init_api.
api = HatiApi()


def _client_address() -> str:
    from flask_limiter.util import get_remote_address

    return get_remote_address()


# Storage: RATELIMIT_STORAGE_URI (Redis in production, memory:// elsewhere).
limiter = Limiter(key_func=_client_address)

# Paths that carry no rate limit: skip Flask-Limiter's per-request limit lookup (the webhook hot path).
_UNLIMITED_PREFIXES = ("/webhooks/", "/healthz", "/readyz")


@limiter.request_filter
def _unlimited_path() -> bool:
    from flask import request

    return request.path.startswith(_UNLIMITED_PREFIXES)
