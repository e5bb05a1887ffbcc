"""``HatiDataAuth(app)``: mount the login routes, the ``/api/v1`` API and the identity resolver on any Flask app.

The HatiData service uses it itself (``create_app``); a dashboard that embeds the login gives it the same
settings (database, WorkOS, ``SECRET_KEY``, ``HATIDATA_COOKIE_KEY``) and calls ``HatiDataAuth(app)``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from flask_caching.backends import FileSystemCache, NullCache, SimpleCache
from limits import parse as parse_limit
from werkzeug.utils import import_string

from . import config
from .cookie_tokens import clear_session_cookie, set_session_cookie
from .errors import AppError, ServiceUnavailable, error_response
from .extensions import cache, csrf, db, limiter
from .identity import CookieSessions, TooManyAttempts
from .local_cache import LocalCache
from .request_hooks import mark_private
from .revocation_bus import RevocationBus
from .services.api_keys import UsageRecorder
from .services.introspection import Introspector, JwksCache, TokenVerifier, default_issuers
from .services.last_seen import LastSeenWriter, redis_claimer
from .services.sessions import SessionPolicy
from .session_checks import IdentityMemo
from .shared_lock import SharedLocks
from .unit_of_work import INVALIDATOR
from .workos import WorkOSGateway, WorkOSSettings

EMBEDDED_SETTINGS: tuple[str, ...] = (
    "HATIDATA_COOKIE_NAME", "HATIDATA_SESSION_CACHE_TTL", "HATIDATA_SESSION_CACHE_MAX_AGE",
    "HATIDATA_SESSION_ACTIVE_TTL",
    "HATIDATA_SESSION_REMEMBERED_TTL", "HATIDATA_PUBLIC_URL", "HATIDATA_LOGIN_STATE_TTL",
    "HATIDATA_LOGIN_RATE_LIMIT", "HATIDATA_API_KEY_FAILURE_RATE_LIMIT", "HATIDATA_API_KEY_PREFIX_FAILURE_RATE_LIMIT",
    "HATIDATA_API_KEY_ROTATION_GRACE", "HATIDATA_API_KEY_USAGE_INTERVAL", "HATIDATA_SESSION_TOUCH_INTERVAL",
    "HATIDATA_REFRESH_SUCCESSOR_TTL", "HATIDATA_REFRESH_WAIT", "HATIDATA_REFRESH_LOCK_TTL",
    "HATIDATA_EXPECTED_LIVE_SESSIONS", "HATIDATA_TOKEN_CACHE_SIZE", "HATIDATA_JWKS_REFETCH_COOLDOWN",
    "HATIDATA_JWKS_LIFESPAN",
    "HATIDATA_REVOCATION_CHANNEL", "WORKOS_JWT_ISSUER", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE", "RATELIMIT_STORAGE_URI", "RATELIMIT_HEADERS_ENABLED", "CACHE_TYPE",
    "CACHE_KEY_PREFIX",
)
"""The settings ``HatiDataAuth`` fills in on a host app that has not set them."""

DEFAULTS: dict[str, Any] = {key: config.DEFAULTS[key] for key in EMBEDDED_SETTINGS}

_BUSES: dict[tuple[str | None, str, Path | None], RevocationBus] = {}
_BUSES_LOCK = threading.Lock()


def cache_kind(settings: Any) -> str:
    """What ``CACHE_TYPE`` names, spelled as Flask-Caching takes it (a backend's class name, or the import path of a
    class): ``"file"`` (a ``FileSystemCache``, shared by the processes on its folder), ``"private"`` (a
    ``SimpleCache`` or ``NullCache``, the process's own) or ``"other"`` (Redis, Memcached, a factory, not found)."""
    name = str(settings.get("CACHE_TYPE") or "")
    try:
        found = import_string(name if "." in name else f"flask_caching.backends.{name}")
    except (ImportError, ValueError):  # not found, or no name at all
        return "other"
    if isinstance(found, type) and issubclass(found, FileSystemCache):
        return "file"
    return "private" if isinstance(found, type) and issubclass(found, SimpleCache | NullCache) else "other"


def bus_for(redis_url: str | None, channel: str, *, log_path: Path | None = None,
            maxsize: int = 10_000) -> RevocationBus:
    """The process-wide bus for one Redis URL and channel, or (without Redis) one revocation log file, shared by
    every app in the process; *maxsize* (entries per in-process cache) is the first caller's."""
    key = (redis_url, channel, None if redis_url else log_path)
    with _BUSES_LOCK:
        bus = _BUSES.get(key)
        if bus is None:
            bus = _BUSES[key] = RevocationBus(redis_url, channel=channel, log_path=log_path, maxsize=maxsize)
        return bus


def revocation_log_path(settings: Any) -> Path | None:
    """Where the processes sharing a file cache tell each other of evictions: beside the cache's folder, so the
    log reaches exactly the processes whose cached values it invalidates. ``None`` with Redis (the bus is Redis's)
    or with a cache private to the process."""
    if (settings.get("REDIS_URL") or cache_kind(settings) != "file"
            or not settings.get("CACHE_DIR")):
        return None
    folder = Path(str(settings["CACHE_DIR"]))
    return folder.with_name(folder.name + "-revocations.log")


def cache_sizes(settings: Any) -> tuple[int, int]:
    """``(status entries, token entries)`` per in-process cache, sized from ``HATIDATA_EXPECTED_LIVE_SESSIONS``
    (a quarter of headroom): each live session has one status, and around a refresh two access tokens and two
    cookies. ``HATIDATA_TOKEN_CACHE_SIZE``, when set, fixes the token caches' size instead."""
    expected = int(settings.get("HATIDATA_EXPECTED_LIVE_SESSIONS")
                   or config.DEFAULTS["HATIDATA_EXPECTED_LIVE_SESSIONS"])
    tokens = settings.get("HATIDATA_TOKEN_CACHE_SIZE")
    status_size = max(1_000, expected + expected // 4)
    return status_size, int(tokens) if tokens else 2 * status_size


def size_shared_cache(settings: Any) -> None:
    """Give a cachelib cache (the file cache of ``make run``, SimpleCache) room for the expected live sessions,
    unless ``CACHE_THRESHOLD`` is set: four times the status caches' size (per session its status and, for
    ``HATIDATA_REFRESH_SUCCESSOR_TTL`` after a refresh, its successor; per API key its status and its id).

    Call before the cache is bound. Past its threshold a file cache scans its whole folder on every write and
    drops the entries closest to expiry first (refresh successors, login states), so a cache smaller than the
    live sessions turns every status reload into a folder scan and refuses a cookie refreshed in another worker.
    """
    if cache_kind(settings) in ("file", "private"):
        settings.setdefault("CACHE_THRESHOLD", 4 * cache_sizes(settings)[0])


class AuthRuntime:
    """Everything the auth routes and the resolver need, per app (``app.extensions['hatidata_auth']``)."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.gateway: WorkOSGateway = app.extensions["hatidata_workos"]
        self.cookie_name = str(config["HATIDATA_COOKIE_NAME"])
        self.cookie_key = str(config["HATIDATA_COOKIE_KEY"])
        self.cookie_secure = bool(config.get("SESSION_COOKIE_SECURE", True))
        self.public_url = (config.get("HATIDATA_PUBLIC_URL") or "").rstrip("/") or None
        self.state_ttl = int(config["HATIDATA_LOGIN_STATE_TTL"])
        self.rotation_grace = int(config["HATIDATA_API_KEY_ROTATION_GRACE"])
        self.policy = SessionPolicy(active_ttl=int(config["HATIDATA_SESSION_ACTIVE_TTL"]),
                                    remembered_ttl=int(config["HATIDATA_SESSION_REMEMBERED_TTL"]))
        self._backend: Any = None
        self._app = app
        channel = config.get("HATIDATA_REVOCATION_CHANNEL") or f"{config.get('CACHE_KEY_PREFIX') or ''}revocations"
        status_size, token_size = cache_sizes(config)
        self.bus = bus_for(config.get("REDIS_URL") or None, channel, log_path=revocation_log_path(config),
                           maxsize=status_size)
        shared = None if cache_kind(config) == "private" else _BackendProxy(self)
        self.last_seen = LastSeenWriter(self._engine, interval=float(config["HATIDATA_SESSION_TOUCH_INTERVAL"]),
                                        claim=self._claimer(config))
        self.introspector = Introspector(bus=self.bus, shared_cache=shared,
                                         cache_ttl=int(config["HATIDATA_SESSION_CACHE_TTL"]),
                                         max_age=int(config["HATIDATA_SESSION_CACHE_MAX_AGE"]),
                                         active_ttl=int(config["HATIDATA_SESSION_ACTIVE_TTL"]),
                                         remembered_ttl=int(config["HATIDATA_SESSION_REMEMBERED_TTL"]),
                                         last_seen=self.last_seen)
        settings: WorkOSSettings = self.gateway.settings
        issuer_setting = config.get("WORKOS_JWT_ISSUER")
        base_url = settings.base_url or "https://api.workos.com"
        issuers = ([i.strip() for i in str(issuer_setting).split(",")] if issuer_setting
                   else default_issuers(base_url, settings.client_id))

        def fetch() -> dict[str, Any]:
            client = self.gateway.client
            response = client.user_management.get_jwks(settings.client_id,
                                                       request_options={"max_retries": 0, "timeout": 5})
            return response.to_dict()

        self.jwks = JwksCache(fetch, lifespan=float(config["HATIDATA_JWKS_LIFESPAN"]),
                              refetch_cooldown=float(config["HATIDATA_JWKS_REFETCH_COOLDOWN"]))
        self.verifier = TokenVerifier(self.jwks, client_id=settings.client_id, issuers=issuers,
                                      leeway=settings.jwt_leeway, maxsize=token_size)
        self.usage = UsageRecorder(float(config["HATIDATA_API_KEY_USAGE_INTERVAL"]))
        self.cookies = CookieSessions(token_size, ttl=int(config["HATIDATA_SESSION_CACHE_TTL"]), bus=self.bus)
        # /api/v1/me's rendered bodies by identity value (api.identity_api._me_body): one per session in use
        self.me_bodies: LocalCache[bytes] = LocalCache(status_size)
        # identities resolved from session credentials, while nothing they were decided from changed: two per
        # session around a refresh, like the token caches
        self.identities = IdentityMemo(self.bus, self.introspector, maxsize=token_size,
                                       ttl=int(config["HATIDATA_SESSION_CACHE_TTL"]) / 3)
        self.locks = SharedLocks(lambda: self.backend)
        self.successor_ttl = int(config["HATIDATA_REFRESH_SUCCESSOR_TTL"])
        self.refresh_wait = float(config["HATIDATA_REFRESH_WAIT"])
        # A holder must outlive its WorkOS call (every retry): a lock that runs out lets a second refresh race it.
        self.refresh_lock_ttl = float(config["HATIDATA_REFRESH_LOCK_TTL"]
                                      or settings.timeout * (settings.max_retries + 1) + 10)
        self.key_failure_limit = parse_limit(str(config["HATIDATA_API_KEY_FAILURE_RATE_LIMIT"]))
        self.key_prefix_failure_limit = parse_limit(str(config["HATIDATA_API_KEY_PREFIX_FAILURE_RATE_LIMIT"]))

    def _engine(self) -> Any:
        with self._app.app_context():
            return db.engine

    def _claimer(self, settings: Any) -> Any:
        if not settings.get("REDIS_URL"):
            return None
        proxy = self

        def claim(session_ids: list[str], seconds: int) -> set[str]:
            backend = proxy.backend
            found = redis_claimer(backend._write_client, backend._get_prefix())
            return found(session_ids, seconds)

        return claim

    # --- the cache backend, usable without an app context ------------------------------------------------

    @property
    def backend(self) -> Any:
        """The Flask-Caching backend of the app (cachelib / Redis)."""
        if self._backend is None:
            self._backend = self._app.extensions["cache"][cache]
        return self._backend

    def shared_get(self, key: str) -> Any:
        """Read the shared cache; ``None`` when it is unavailable."""
        try:
            return self.backend.get(key)
        except Exception:  # noqa: BLE001
            return None

    def shared_set(self, key: str, value: Any, ttl: int) -> None:
        """Write the shared cache (best effort)."""
        with contextlib.suppress(Exception):  # best effort
            self.backend.set(key, value, timeout=ttl)

    def take_once(self, key: str) -> Any:
        """Read and delete a shared value so that only one caller gets it (single-use login state)."""
        try:
            value = self.backend.get(key)
            if value is None or not self.backend.delete(key):
                return None
        except Exception as exc:
            raise ServiceUnavailable("The login state store is unavailable; retry shortly.") from exc
        return value

    def put(self, key: str, value: Any, ttl: int) -> None:
        """Store a value that the flow depends on (raises 503 when the cache is down)."""
        try:
            ok = self.backend.set(key, value, timeout=ttl)
        except Exception as exc:
            raise ServiceUnavailable("The login state store is unavailable; retry shortly.") from exc
        if ok is False:
            raise ServiceUnavailable("The login state store is unavailable; retry shortly.")

    # --- failed API-key attempts -------------------------------------------------------------------------------
    # Only failures are counted and only failures are refused: a correct secret is accepted whatever the
    # counters say, so neither an attacker at the same address nor one spraying a victim's prefix can lock
    # a valid key out.

    def _key_failure_counters(self, prefix: str) -> list[tuple[Any, str, str]]:
        from flask_limiter.util import get_remote_address

        return [(self.key_failure_limit, "hatidata-api-key-failures", get_remote_address()),
                (self.key_prefix_failure_limit, "hatidata-api-key-prefix-failures", prefix)]

    def key_attempt_failed(self, prefix: str) -> None:
        """Count a failed API-key attempt against the caller's address and the presented key prefix (the
        first 16 characters, known or not); raises :class:`TooManyAttempts` (429) once either is over its limit.

        A broken rate-limit store counts nothing and refuses nothing.
        """
        strategy = limiter.limiter
        if strategy is None:
            return
        exceeded = None
        for limit, *identifiers in self._key_failure_counters(prefix):
            try:
                allowed = strategy.hit(limit, *identifiers)
            except Exception:  # noqa: BLE001,S112 - a broken store never locks anyone out
                continue
            if not allowed and exceeded is None:
                exceeded = (limit, identifiers)
        if exceeded is None:
            return
        limit, identifiers = exceeded
        retry_after = 60
        with contextlib.suppress(Exception):
            reset_at, _ = strategy.get_window_stats(limit, *identifiers)
            retry_after = max(1, int(reset_at - time.time()) + 1)
        raise TooManyAttempts("Too many failed API-key attempts; retry later.",
                              headers={"Retry-After": str(retry_after)})


class _BackendProxy:
    """The app's cache backend, looked up lazily (the cache is bound after the runtime is built)."""

    def __init__(self, runtime: AuthRuntime) -> None:
        self._runtime = runtime

    def get(self, key: str) -> Any:
        return self._runtime.backend.get(key)

    def set(self, key: str, value: Any, timeout: int | None = None) -> Any:
        return self._runtime.backend.set(key, value, timeout=timeout)

    def add(self, key: str, value: Any, timeout: int | None = None) -> Any:
        return self._runtime.backend.add(key, value, timeout=timeout)

    def delete(self, key: str) -> Any:
        return self._runtime.backend.delete(key)

    def extend(self, key: str, seconds: int, *, unless: Any) -> bool:
        """Give a Redis entry *seconds* more to live, unless it holds *unless*; other caches: nothing."""
        backend = self._runtime.backend
        client = getattr(backend, "_write_client", None)
        if client is None:
            return False
        return bool(client.eval(_EXTEND, 1, f"{backend._get_prefix()}{key}", backend.serializer.dumps(unless),
                                seconds))


_EXTEND = ("local v = redis.call('get', KEYS[1]) if not v or v == ARGV[1] then return 0 end "
           "return redis.call('expire', KEYS[1], ARGV[2])")


class HatiDataAuth:
    """Flask extension: ``HatiDataAuth(app)`` or ``auth = HatiDataAuth(); auth.init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, api: bool = True) -> None:
        self.api = api
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Bind the core extensions the host app has not bound yet, then mount the routes and hooks."""
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        problems = [k for k in ("SECRET_KEY", "HATIDATA_COOKIE_KEY", "SQLALCHEMY_DATABASE_URI",
                                "HATIDATA_PUBLIC_URL") if not app.config.get(k)]
        if problems:
            raise RuntimeError(f"HatiDataAuth needs these settings: {', '.join(problems)}")
        if "sqlalchemy" not in app.extensions:
            from . import models  # noqa: F401 - registers the tables

            db.init_app(app)
        if cache not in (app.extensions.get("cache") or {}):
            size_shared_cache(app.config)
            cache.init_app(app)
        if "csrf" not in app.extensions:
            csrf.init_app(app)
        if "limiter" not in app.extensions:
            limiter.init_app(app)
        if "hatidata_workos" not in app.extensions:
            app.config.setdefault("WORKOS_API_KEY", None)
            app.config.setdefault("WORKOS_CLIENT_ID", None)
            app.extensions["hatidata_workos"] = WorkOSGateway(WorkOSSettings.from_config(app.config))

        runtime = AuthRuntime(app)
        runtime.bus.clear()
        app.extensions["hatidata_auth"] = runtime
        app.extensions[INVALIDATOR] = runtime.introspector  # db.session's, through FlaskAppSession

        from .auth import routes

        csrf.exempt(routes.bp)
        app.register_blueprint(routes.bp)
        if self.api:
            from .api import init_api

            init_api(app)
        app.after_request(mark_private)  # registered first so it runs last, seeing the cookie changes
        app.after_request(_apply_cookie_changes)
        handlers = app.error_handler_spec.get(None, {}).get(None, {})
        if AppError not in handlers:
            app.register_error_handler(AppError, _app_error)


def _app_error(exc: AppError) -> Response:
    """The JSON error answer, for host apps that have no handler of their own."""
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _apply_cookie_changes(response: Response) -> Response:
    """Set the refreshed session cookie, or clear a bad one, as the resolver decided."""
    from .identity import runtime

    rt = runtime()
    new_cookie = request.environ.get("hatidata.set_cookie")
    if new_cookie is not None:
        sealed, remembered = new_cookie
        set_session_cookie(response, rt, sealed, remembered=remembered)
    elif request.environ.get("hatidata.clear_cookie"):
        clear_session_cookie(response, rt)
    return response
