"""The application factory."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from inspect import iscoroutinefunction
from pathlib import Path
from types import FunctionType, MethodType
from typing import Any
from weakref import WeakKeyDictionary

from flask import Flask
from sqlalchemy import event

from . import audit_runtime, inbox_runtime, inputs, lasting_effects, metrics_views, sso_wizard, tracing
from . import config as settings
from .errors import register_error_handlers
from .extensions import cache, csrf, db, engine_options, limiter, migrate
from .idp import load_plugins
from .logs import configure_logging
from .request_hooks import register_request_hooks
from .unit_of_work import AppSession
from .workos import WorkOSGateway, WorkOSSettings

MIGRATIONS_DIR = settings.PROJECT_ROOT / "migrations"


class HatiDataFlask(Flask):
    """Flask, asking once per function whether it is a coroutine function.

    Flask calls :meth:`ensure_sync` (its documented override point) for every hook and view of every request, and
    it asks ``inspect.iscoroutinefunction`` each time: 17 times for an API call, about 4 % of a request's CPU under
    a profiler. The answer for a plain function or a bound method is kept, by weak reference (a callable made per
    request, such as an ``after_this_request`` closure or a class-based view's bound method, is dropped with its
    request and holds nothing alive), for at most :attr:`SYNC_CHECKED_MAX` live ones. Any other callable is asked
    every time, as Flask asks; a coroutine function is handed to :meth:`async_to_sync` as Flask does.
    """

    SYNC_CHECKED_MAX = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_checked: WeakKeyDictionary[Callable[..., Any], bool] = WeakKeyDictionary()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if type(func) not in (FunctionType, MethodType):  # identity-compared callables only
            return super().ensure_sync(func)
        coroutine = self._sync_checked.get(func)
        if coroutine is None:
            coroutine = iscoroutinefunction(func)
            if len(self._sync_checked) < self.SYNC_CHECKED_MAX:
                self._sync_checked[func] = coroutine
        return self.async_to_sync(func) if coroutine else func


def create_app(config: Mapping[str, Any] | None = None, *, profile: str | None = None) -> Flask:
    """Create the HatiData Auth application.

    *config* overrides every other source; its ``HATIDATA_ENV`` (or *profile*) picks the profile.
    """
    instance_path = os.environ.get("HATIDATA_INSTANCE_PATH") or str(settings.PROJECT_ROOT / "instance")
    app = HatiDataFlask(__name__, instance_path=instance_path, instance_relative_config=True)

    configure(app, config, profile)
    configure_logging(app)
    init_extensions(app)
    register_request_hooks(app)
    tracing.init_app(app)  # OpenTelemetry traces, only when configured (off: nothing instrumented)
    inputs.init_app(app)  # every route: bounded JSON, storable values (before the API limits itself to /api/)
    register_error_handlers(app)
    register_blueprints(app)
    sso_wizard.init_app(app, load_plugins(app))
    metrics_views.init_app(app)
    trust_proxies(app)
    inbox_runtime.init_app(app)  # the inbox appliers, started with the first request (never in a CLI command)
    audit_runtime.init_app(app)  # checkpoints and export jobs, the same way
    register_cli(app)
    return app


def trust_proxies(app: Flask) -> None:
    """Behind ``HATIDATA_TRUSTED_PROXIES`` reverse proxies, take client address, scheme and host from their
    ``X-Forwarded-*`` headers (only that many hops: a client cannot forge its address past them)."""
    hops = int(app.config.get("HATIDATA_TRUSTED_PROXIES") or settings.DEFAULTS["HATIDATA_TRUSTED_PROXIES"])
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,  # type: ignore[method-assign]
                                x_port=hops, x_prefix=hops)


def configure(app: Flask, overrides: Mapping[str, Any] | None, profile: str | None) -> None:
    """Load the profile, its settings files and the environment; refuse a weak production setup."""
    name = settings.profile_name(profile or (overrides or {}).get("HATIDATA_ENV"))
    resolved = settings.resolve(name, overrides)
    if name == "production":
        problems = settings.validate_production(resolved)
        if problems:
            raise settings.ConfigError(problems)
        if resolved.get("REDIS_URL"):
            resolved.setdefault("CACHE_REDIS_URL", resolved["REDIS_URL"])
            resolved["RATELIMIT_STORAGE_URI"] = resolved["REDIS_URL"]
    else:
        settings.fill_local_defaults(resolved, Path(app.instance_path))
        if resolved.get("REDIS_URL"):
            resolved["CACHE_REDIS_URL"] = resolved["REDIS_URL"]
    if resolved.get("CACHE_REDIS_URL"):
        resolved.setdefault("CACHE_OPTIONS", dict(settings.REDIS_CACHE_OPTIONS))
    try:  # PostgreSQL's lock_timeout and connect_timeout
        resolved["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(resolved)
    except ValueError as exc:
        raise settings.ConfigError([str(exc)]) from exc
    app.config.update(resolved)


def init_extensions(app: Flask) -> None:
    """Bind the database, migrations, cache, CSRF protection and the WorkOS gateway."""
    from . import models  # noqa: F401 - registers the tables on the metadata

    db.init_app(app)
    if not event.contains(AppSession, "after_commit", lasting_effects.note_commit):  # our sessions', once
        event.listen(AppSession, "after_commit", lasting_effects.note_commit)  # a view that committed is not rerun
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True)
    from .embedding import size_shared_cache

    size_shared_cache(app.config)
    cache.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    app.extensions["hatidata_workos"] = WorkOSGateway(WorkOSSettings.from_config(app.config))


def register_blueprints(app: Flask) -> None:
    """Mount the core blueprints."""
    from . import health, home, policy_page, webhooks
    from .embedding import HatiDataAuth

    app.register_blueprint(health.bp)
    app.register_blueprint(home.bp)
    # The login routes, the identity resolver and the documented /api/v1 API, as embedding apps get them.
    HatiDataAuth(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(policy_page.bp)


def register_cli(app: Flask) -> None:
    """Add the ``hatidata`` command group."""
    from .cli import hatidata_cli

    app.cli.add_command(hatidata_cli)
