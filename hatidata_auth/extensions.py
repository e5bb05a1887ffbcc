"""Flask extensions, created unbound and initialised by :func:`hatidata_auth.create_app`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flask import current_app, has_app_context
from flask_caching import Cache
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from flask_wtf import CSRFProtect
from sqlalchemy.engine import make_url
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


def engine_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """``SQLALCHEMY_ENGINE_OPTIONS`` of *config* with, on PostgreSQL, ``lock_timeout`` set on every connection from
    ``HATIDATA_DB_LOCK_TIMEOUT`` (seconds; 0: none) and libpq's ``connect_timeout`` from
    ``HATIDATA_DB_CONNECT_TIMEOUT`` (seconds, rounded up to a whole one, at least 2 as libpq counts, per address
    tried; 0: psycopg's own default; one in the URL or in your own ``connect_args`` is kept; ``ValueError`` for a
    negative or infinite one). A statement that waits longer for a lock fails (SQLSTATE ``55P03``: its transaction
    rolled back, a request answered ``503`` with ``Retry-After``, an applier's batch claimed again), and
    so does a connection not established in time (a server or proxy that accepts and never answers), instead of
    holding its worker until gunicorn's timeout kills it (30 s: the defaults stay below)."""
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if not str(config.get("SQLALCHEMY_DATABASE_URI") or "").startswith("postgresql"):
        return options
    connect = dict(options.get("connect_args") or {})
    seconds = float(config.get("HATIDATA_DB_LOCK_TIMEOUT") or 0)
    if seconds > 0:
        connect["options"] = f"{connect.get('options') or ''} -c lock_timeout={max(1, round(seconds * 1000))}".strip()
    raw = config.get("HATIDATA_DB_CONNECT_TIMEOUT") or 0
    try:
        connecting = float(raw)
    except (TypeError, ValueError):
        connecting = math.nan
    if not math.isfinite(connecting) or connecting < 0:
        raise ValueError(f"HATIDATA_DB_CONNECT_TIMEOUT must be 0 or a number of seconds, not {raw!r}")
    url_has_it = "connect_timeout" in make_url(str(config["SQLALCHEMY_DATABASE_URI"])).query
    if connecting > 0 and not url_has_it:  # the operator's own, in the URL or connect_args, is kept
        connect.setdefault("connect_timeout", max(2, math.ceil(connecting)))
    if connect:
        options["connect_args"] = connect
    return options
migrate = Migrate()
cache = Cache()
csrf = CSRFProtect()
# The admin REST API (flask-smorest); its blueprints are registered by hatidata_auth.api.init_api.
api = HatiApi()


def _client_address() -> str:
    from flask_limiter.util import get_remote_address

    return get_remote_address()


class _Limiter(Limiter):
    """Flask-Limiter's limiter, without its per-request work where no limit can apply.

    Its request filter (:func:`_unlimited_path`) makes it resolve an empty list of limits, yet it still evaluated
    that list and the exemptions on every request: a few per cent of an acknowledged webhook's time under
    ``bench/ack_profile.py``'s profile. With no meta limit configured (which would apply even there), such a request
    now skips the check, as the filter already answered it."""

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if not self._meta_limits and _unlimited_path():
            return
        super()._check_request_limit(callable_name, in_middleware)


# Storage: RATELIMIT_STORAGE_URI (Redis in production, memory:// elsewhere).
limiter = _Limiter(key_func=_client_address)

_NEVER_LIMITED = "_hatidata_never_rate_limited"
UNLIMITED_ENDPOINTS = "hatidata_unlimited_endpoints"
"""``app.extensions`` key: endpoint -> whether no rate limit applies to it (decided once per endpoint)."""


def never_rate_limited(view: Any) -> Any:
    """Mark one of our views as never rate limited, whatever limits a host application sets by default (the
    WorkOS webhook, which WorkOS retries, and the health checks). A host's own routes, whatever their paths, keep
    their limits."""
    setattr(view, _NEVER_LIMITED, True)
    return view


def endpoint_unlimited(app: Any, endpoint: str, blueprint: str | None) -> bool:
    """Whether no rate limit can apply to *endpoint*: none of its own, of its blueprint, by default, for the
    whole application or as a meta limit (a host app's ``RATELIMIT_DEFAULT`` keeps every route limited)."""
    from flask_limiter.util import get_qualified_name

    manager = limiter.limit_manager
    view = app.view_functions.get(endpoint)
    return not (manager.application_limits or manager.default_limits or app.config.get("RATELIMIT_META")
                or manager.has_hints(endpoint) or (view is not None and manager.decorated_limits(
                    get_qualified_name(view))) or (blueprint and manager.blueprint_limits(app, blueprint)))


@limiter.request_filter
def _unlimited_path() -> bool:
    # Flask-Limiter resolves a request's limits anew on every request (about a tenth of an authenticated API
    # call's cost); an endpoint without any limit is decided once.
    from flask import request

    endpoint = request.endpoint
    if endpoint is None:
        return False
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    known: dict[str, bool] = app.extensions.setdefault(UNLIMITED_ENDPOINTS, {})
    unlimited = known.get(endpoint)
    if unlimited is None:
        unlimited = known[endpoint] = (getattr(app.view_functions.get(endpoint), _NEVER_LIMITED, False)
                                       or endpoint_unlimited(app, endpoint, request.blueprint))
    return unlimited
