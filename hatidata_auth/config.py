"""Configuration profiles, environment overrides and production checks.

Settings are resolved in this order, later wins:

1. :data:`DEFAULTS` and what the chosen profile changes (:data:`PROFILE_SETTINGS`);
2. the profile's settings file ``config/<profile>.py`` (plain ``KEY = value`` lines), if present;
3. the file named by ``HATIDATA_SETTINGS`` (any profile), if set;
4. environment variables (see :data:`ENV_SETTINGS`; in development, ``WORKOS_EMULATOR_PORT`` without
   ``WORKOS_BASE_URL`` points WorkOS at the emulator on that port, see :data:`EMULATOR_PORT_VAR`);
5. the mapping passed to ``create_app(config=...)``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from .workos import WORKOS_DEFAULTS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("development", "testing", "production")

EMULATOR_API_KEY = "sk_test_emulator"
DEVELOPMENT_WEBHOOK_SECRET = "whsec_hatidata_development"  # noqa: S105 - make run's, public: production refuses it
EMULATOR_CLIENT_ID = "client_emulator"


class ConfigError(RuntimeError):
    """Raised at start-up when the configuration cannot run the service safely."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"HatiData Auth cannot start; fix these settings:\n{lines}")


DEFAULTS: dict[str, Any] = {
    **WORKOS_DEFAULTS,  # WORKOS_TIMEOUT, WORKOS_MAX_RETRIES, WORKOS_JWT_LEEWAY, WORKOS_WEBHOOK_TOLERANCE
    "HATIDATA_ENV": "development",
    "SECRET_KEY": None,
    "SQLALCHEMY_DATABASE_URI": None,
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "HATIDATA_DB_LOCK_TIMEOUT": 20.0,  # seconds a statement waits for a PostgreSQL lock (0: for ever); extensions.py
    "HATIDATA_DB_CONNECT_TIMEOUT": 5.0,  # seconds a PostgreSQL connection attempt may take (0: psycopg's); extensions
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "REDIS_URL": None,
    "CACHE_TYPE": "SimpleCache",
    "CACHE_DEFAULT_TIMEOUT": 300,
    "CACHE_KEY_PREFIX": "hatidata:",
    "WORKOS_API_KEY": None,
    "WORKOS_CLIENT_ID": None,
    "WORKOS_BASE_URL": None,
    "WORKOS_WEBHOOK_SECRET": None,
    "WORKOS_JWT_ISSUER": None,
    "HATIDATA_COOKIE_KEY": None,
    "HATIDATA_COOKIE_NAME": "hatidata_session",
    "HATIDATA_SESSION_CACHE_TTL": 300,
    "HATIDATA_SESSION_CACHE_MAX_AGE": 3600,
    "HATIDATA_SESSION_ACTIVE_TTL": 24 * 3600,
    "HATIDATA_SESSION_REMEMBERED_TTL": 7 * 24 * 3600,
    "HATIDATA_SESSION_TOUCH_INTERVAL": 60,
    "HATIDATA_PUBLIC_URL": None,
    "HATIDATA_ENABLED_PLUGINS": None,
    "HATIDATA_LOGIN_STATE_TTL": 600,
    "HATIDATA_LOGIN_RATE_LIMIT": "30 per minute",
    "HATIDATA_API_KEY_FAILURE_RATE_LIMIT": "10 per minute",
    "HATIDATA_API_KEY_PREFIX_FAILURE_RATE_LIMIT": "30 per minute",
    "HATIDATA_API_KEY_ROTATION_GRACE": 24 * 3600,
    "HATIDATA_API_KEY_USAGE_INTERVAL": 60,
    "HATIDATA_REFRESH_SUCCESSOR_TTL": 60,
    "HATIDATA_REFRESH_WAIT": 10,
    "HATIDATA_REFRESH_LOCK_TTL": None,
    "HATIDATA_EXPECTED_LIVE_SESSIONS": 10_000,
    "HATIDATA_TOKEN_CACHE_SIZE": None,
    "HATIDATA_JWKS_REFETCH_COOLDOWN": 10,
    "HATIDATA_JWKS_LIFESPAN": 3600,
    "HATIDATA_REVOCATION_CHANNEL": None,
    "HATIDATA_WEBHOOK_MAX_BYTES": 1024 * 1024,
    "HATIDATA_INBOX_APPLIERS": None,  # threads per app process (None: 1, none under TESTING; 0: for `inbox work`)
    "HATIDATA_INBOX_BATCH": 20,
    "HATIDATA_INBOX_POLL_INTERVAL": 1.0,
    "HATIDATA_INBOX_LINGER": 0.05,  # seconds an applier waits after a short batch (services.applier_pool.Linger)
    "HATIDATA_INBOX_GIVE_WAY": 30.0,  # seconds a web process's applier gives way to its requests (applier_pool.GiveWay)
    # Members one transaction recomputes at most (a group rename or deletion, a directory deletion, a role-mapping
    # edit): more are recomputed in chunks of this size by the appliers (docs/directory-sync.md, "Fan-out").
    "HATIDATA_FANOUT_CHUNK": 500,
    # OpenTelemetry traces (docs/deploy.md, "Traces"): None means on exactly when an OTLP endpoint is set
    # (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); the other OTEL_* variables are the SDK's.
    "HATIDATA_OTEL_ENABLED": None,
    "HATIDATA_MAX_JSON_BYTES": 1024 * 1024,
    "HATIDATA_MAX_JSON_DEPTH": 32,
    "HATIDATA_TRUSTED_PROXIES": 0,
    "HATIDATA_LOG_LEVEL": "INFO",
    "HATIDATA_METRICS_TOKEN": None,
    "HATIDATA_SECURITY_SUMMARY_WINDOW": 60,
    "HATIDATA_READINESS_CACHE_SECONDS": 5,
    "HATIDATA_INBOX_RETENTION_DAYS": 30,
    # Days SSO sign-in attempts are kept for the organization's admins (`hatidata sign-ins expire`).
    "HATIDATA_SIGN_IN_ATTEMPTS_RETENTION_DAYS": 30,
    # The audit log at scale (docs/audit.md): the Ed25519 key signing checkpoints (development: generated into
    # instance/audit-signing-key; production without it: no checkpoints), a checkpoint every N events and at least
    # every INTERVAL seconds while events come, the seconds one request may spend reading the log (below
    # gunicorn's worker timeout), the rows one synchronous export sends before its continuation, export jobs.
    "HATIDATA_AUDIT_SIGNING_KEY": None,
    # Previous signing keys' public halves (base64url, comma-separated) whose checkpoints still verify: trust is
    # anchored in the configuration, never in the audit_signing_keys table.
    "HATIDATA_AUDIT_TRUSTED_KEYS": (),
    "HATIDATA_AUDIT_CHECKPOINT_EVERY": 1000,
    "HATIDATA_AUDIT_CHECKPOINT_INTERVAL": 60,
    "HATIDATA_AUDIT_REQUEST_BUDGET": 20.0,
    # Seconds one page of GET /api/v1/audit-events may scan before it answers short, with a cursor.
    "HATIDATA_AUDIT_PAGE_BUDGET": 0.025,
    "HATIDATA_AUDIT_EXPORT_MAX_ROWS": 100_000,
    "HATIDATA_AUDIT_EXPORT_DIR": None,
    "HATIDATA_AUDIT_EXPORT_RETENTION": 24 * 3600,
    # Export jobs one organization may have pending or running at once; seconds a worker holds a job it took.
    "HATIDATA_AUDIT_EXPORT_MAX_JOBS": 3,
    "HATIDATA_AUDIT_EXPORT_LEASE": 3600,
    # The audit worker thread (checkpoints, export jobs, streams): None = on, off under TESTING; 0 = off.
    "HATIDATA_AUDIT_WORKER": None,
    # Audit streams (docs/audit.md, "Streaming to a SIEM": sinks per organization, batch, attempts, backoff).
    "HATIDATA_AUDIT_STREAMS_MAX": 5, "HATIDATA_AUDIT_STREAM_BATCH": 500, "HATIDATA_AUDIT_STREAM_MAX_ATTEMPTS": 8,
    "HATIDATA_AUDIT_STREAM_BACKOFF": 5.0, "HATIDATA_AUDIT_STREAM_BACKOFF_MAX": 3600.0,
    "HATIDATA_AUDIT_STREAM_TIMEOUT": 10.0, "HATIDATA_AUDIT_STREAM_LEASE": 300,
    "HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP": False, "HATIDATA_AUDIT_STREAM_CA_BUNDLE": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": True,
    "WTF_CSRF_TIME_LIMIT": 3600,
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_HEADERS_ENABLED": True, "RATELIMIT_ENABLED": True,  # each app its own: Flask-Limiter's is shared
}
"""Every setting's default, the one table: profiles, the embedding extension and the code that reads a setting
all take their defaults from here (the WorkOS client's own come from :data:`hatidata_auth.workos.WORKOS_DEFAULTS`,
the lowest layer, which cannot import this module)."""

_DEVELOPMENT: dict[str, Any] = {
    # The embedded default: SQLite under ``instance/``, a machine-wide file cache, the local emulator.
    "CACHE_TYPE": "FileSystemCache",
    "SESSION_COOKIE_SECURE": False,
    "WORKOS_API_KEY": EMULATOR_API_KEY,
    "WORKOS_CLIENT_ID": EMULATOR_CLIENT_ID,
    "WORKOS_WEBHOOK_SECRET": DEVELOPMENT_WEBHOOK_SECRET,
    "HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP": True,
}

PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "development": _DEVELOPMENT,
    # Used by the test suite; the fixtures point it at their own database, cache and emulator.
    "testing": {**_DEVELOPMENT, "TESTING": True, "CACHE_TYPE": "SimpleCache", "WORKOS_MAX_RETRIES": 0,
                "WTF_CSRF_ENABLED": True},
    # Everything else must come from the environment or a settings file; see :func:`validate_production`.
    "production": {"CACHE_TYPE": "RedisCache", "SESSION_COOKIE_SECURE": True},
}
"""What each profile changes from :data:`DEFAULTS`."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(value)


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# Environment variable -> (config key, parser). Environment variables override every file.
ENV_SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", str),
    # The rest are read into the config key of the same name.
    **{name: (name, parser) for parser, names in (
        (str, ("SECRET_KEY", "REDIS_URL", "WORKOS_API_KEY", "WORKOS_CLIENT_ID", "WORKOS_BASE_URL",
                "WORKOS_WEBHOOK_SECRET", "HATIDATA_COOKIE_KEY", "HATIDATA_PUBLIC_URL", "HATIDATA_LOG_LEVEL",
                "HATIDATA_METRICS_TOKEN", "HATIDATA_AUDIT_SIGNING_KEY", "HATIDATA_AUDIT_EXPORT_DIR",
                "HATIDATA_AUDIT_STREAM_CA_BUNDLE")),
        (float, ("WORKOS_TIMEOUT", "HATIDATA_DB_LOCK_TIMEOUT", "HATIDATA_DB_CONNECT_TIMEOUT",
                "HATIDATA_INBOX_POLL_INTERVAL", "HATIDATA_INBOX_LINGER", "HATIDATA_INBOX_GIVE_WAY",
                "HATIDATA_AUDIT_CHECKPOINT_INTERVAL", "HATIDATA_AUDIT_REQUEST_BUDGET", "HATIDATA_AUDIT_PAGE_BUDGET",
                "HATIDATA_AUDIT_STREAM_BACKOFF", "HATIDATA_AUDIT_STREAM_BACKOFF_MAX", "HATIDATA_AUDIT_STREAM_TIMEOUT")),
        (int, ("WORKOS_MAX_RETRIES", "HATIDATA_SESSION_CACHE_TTL", "HATIDATA_SESSION_CACHE_MAX_AGE",
                "HATIDATA_EXPECTED_LIVE_SESSIONS", "HATIDATA_TRUSTED_PROXIES", "HATIDATA_SECURITY_SUMMARY_WINDOW",
                "HATIDATA_READINESS_CACHE_SECONDS", "HATIDATA_INBOX_RETENTION_DAYS",
                "HATIDATA_SIGN_IN_ATTEMPTS_RETENTION_DAYS", "HATIDATA_INBOX_APPLIERS", "HATIDATA_INBOX_BATCH",
                "HATIDATA_FANOUT_CHUNK", "HATIDATA_AUDIT_CHECKPOINT_EVERY", "HATIDATA_AUDIT_EXPORT_MAX_ROWS",
                "HATIDATA_AUDIT_EXPORT_RETENTION", "HATIDATA_AUDIT_EXPORT_MAX_JOBS", "HATIDATA_AUDIT_EXPORT_LEASE",
                "HATIDATA_AUDIT_WORKER", "HATIDATA_AUDIT_STREAMS_MAX", "HATIDATA_AUDIT_STREAM_BATCH",
                "HATIDATA_AUDIT_STREAM_MAX_ATTEMPTS", "HATIDATA_AUDIT_STREAM_LEASE")),
        (_csv, ("HATIDATA_ENABLED_PLUGINS", "HATIDATA_AUDIT_TRUSTED_KEYS")),
        (_bool, ("HATIDATA_OTEL_ENABLED", "HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP")),
    ) for name in names},
}


# Redis client options of the cache: a frozen or unreachable Redis must fail fast, never hang a request.
REDIS_CACHE_OPTIONS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def profile_name(explicit: str | None = None) -> str:
    """Return the profile to use: the explicit one, ``HATIDATA_ENV``, or ``development``."""
    name = explicit or os.environ.get("HATIDATA_ENV") or "development"
    if name not in PROFILES:
        raise ConfigError([f"HATIDATA_ENV={name!r} is not one of {', '.join(PROFILES)}"])
    return name


def config_dir() -> Path:
    """Return the folder holding the settings files (``HATIDATA_CONFIG_DIR`` or ``<project>/config``)."""
    return Path(os.environ.get("HATIDATA_CONFIG_DIR") or PROJECT_ROOT / "config")


def read_settings_file(path: Path) -> dict[str, Any]:
    """Execute a settings file and return its upper-case names."""
    namespace: dict[str, Any] = {"__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our own settings file
    return {k: v for k, v in namespace.items() if k.isupper()}


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the settings named by environment variables that are set and not empty."""
    found: dict[str, Any] = {}
    problems: list[str] = []
    for var, (key, parse) in ENV_SETTINGS.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            found[key] = parse(raw)
        except ValueError:
            problems.append(f"{var}={raw!r} is not a valid value")
    if problems:
        raise ConfigError(problems)
    return found


def resolve(
    profile: str, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return the merged settings for *profile* (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    settings = {**DEFAULTS, **PROFILE_SETTINGS[profile]}
    profile_file = config_dir() / f"{profile}.py"
    if profile_file.is_file():
        settings.update(read_settings_file(profile_file))
    extra_file = environ.get("HATIDATA_SETTINGS")
    if extra_file:
        settings.update(read_settings_file(Path(extra_file)))
    settings.update(from_environment(environ))
    if profile == "development" and environ.get(EMULATOR_PORT_VAR) and not environ.get("WORKOS_BASE_URL"):
        settings["WORKOS_BASE_URL"] = emulator_base_url(environ[EMULATOR_PORT_VAR])
    if overrides:
        settings.update(overrides)
    settings["HATIDATA_ENV"] = profile
    return settings


EMULATOR_PORT_VAR = "WORKOS_EMULATOR_PORT"
"""The port ``make run`` starts the emulator on (default 4100). In the development profile, without
``WORKOS_BASE_URL``, the app and every CLI command talk to the emulator on this port, as ``make run`` does."""


def emulator_base_url(port: str) -> str:
    """The development emulator's URL on *port* (``WORKOS_EMULATOR_PORT``); a port that is not one is named."""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError([f"{EMULATOR_PORT_VAR}={port!r} is not a TCP port"])
    return f"http://127.0.0.1:{int(port)}"


def fill_local_defaults(settings: dict[str, Any], instance_path: Path) -> None:
    """Give development and testing what production must be told: a database, secrets (generated once into
    ``instance/dev-secrets.json``, so that every worker and restart agrees on them), a cache folder, the public URL."""
    instance_path.mkdir(parents=True, exist_ok=True)
    if not settings.get("HATIDATA_PUBLIC_URL"):
        # Where `make run` serves; absolute URLs never come from the request's Host header.
        settings["HATIDATA_PUBLIC_URL"] = f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"
    if not settings.get("SQLALCHEMY_DATABASE_URI"):
        settings["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{instance_path / 'hatidata_auth.sqlite3'}"
    if settings.get("CACHE_TYPE") == "FileSystemCache" and not settings.get("REDIS_URL"):
        settings.setdefault("CACHE_DIR", str(instance_path / "cache"))
    if settings.get("REDIS_URL"):
        settings["CACHE_TYPE"] = "RedisCache"
    if not settings.get("HATIDATA_AUDIT_SIGNING_KEY"):
        settings["HATIDATA_AUDIT_SIGNING_KEY"] = _local_signing_key(instance_path)
    if settings.get("SECRET_KEY") and settings.get("HATIDATA_COOKIE_KEY"):
        return
    secrets_file = instance_path / "dev-secrets.json"
    stored: dict[str, str] = {}
    if secrets_file.is_file():
        stored = json.loads(secrets_file.read_text())
    if not stored.get("SECRET_KEY") or not stored.get("HATIDATA_COOKIE_KEY"):
        stored = {"SECRET_KEY": secrets.token_urlsafe(48), "HATIDATA_COOKIE_KEY": Fernet.generate_key().decode()}
        tmp = secrets_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored))
        tmp.chmod(0o600)
        if not secrets_file.exists():
            os.replace(tmp, secrets_file)
        else:
            tmp.unlink()
            stored = json.loads(secrets_file.read_text())
    settings["SECRET_KEY"] = settings.get("SECRET_KEY") or stored["SECRET_KEY"]
    settings["HATIDATA_COOKIE_KEY"] = settings.get("HATIDATA_COOKIE_KEY") or stored["HATIDATA_COOKIE_KEY"]


def _local_signing_key(instance_path: Path) -> str:
    """The development audit signing key, generated once into ``instance/audit-signing-key`` (mode 0600)."""
    from .services.audit_signing import generate_key

    path = instance_path / "audit-signing-key"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(generate_key())
        tmp.chmod(0o600)
        if path.exists():
            tmp.unlink()
        else:
            os.replace(tmp, path)
    return path.read_text().strip()


def is_fernet_key(value: str | None) -> bool:
    """Return whether *value* is a usable Fernet key (32 url-safe base64 bytes)."""
    if not value:
        return False
    try:
        Fernet(value.encode())
    except (ValueError, TypeError):
        return False
    return True


def _loopback(host: str | None) -> bool:
    """Whether *host* is this machine (as RFC 8252 allows plain-http redirect URIs only for loopback)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


PUBLIC_VALUES = {"WORKOS_API_KEY": (EMULATOR_API_KEY, "the emulator's public test key"),
                 "WORKOS_WEBHOOK_SECRET": (DEVELOPMENT_WEBHOOK_SECRET, "the development profile's public default")}


def validate_production(settings: Mapping[str, Any]) -> list[str]:  # noqa: C901 - a flat list of independent production checks
    """Every missing, weak or public (:data:`PUBLIC_VALUES`: in this repository) setting, named with what to do."""
    problems: list[str] = []
    if not settings.get("SQLALCHEMY_DATABASE_URI"):
        problems.append("DATABASE_URL is missing (a PostgreSQL URL, e.g. postgresql+psycopg://user@host/db)")
    elif str(settings["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        problems.append("DATABASE_URL points at SQLite; production needs PostgreSQL")
    if not settings.get("REDIS_URL"):
        problems.append("REDIS_URL is missing (e.g. redis://127.0.0.1:6379/0)")
    api_key = settings.get("WORKOS_API_KEY")
    if not api_key:
        problems.append("WORKOS_API_KEY is missing")
    if not settings.get("WORKOS_CLIENT_ID"):
        problems.append("WORKOS_CLIENT_ID is missing")
    webhook_secret = settings.get("WORKOS_WEBHOOK_SECRET")
    if not webhook_secret:
        problems.append("WORKOS_WEBHOOK_SECRET is missing")
    elif len(str(webhook_secret)) < 16:
        problems.append("WORKOS_WEBHOOK_SECRET is weak (fewer than 16 characters)")
    cookie_key = settings.get("HATIDATA_COOKIE_KEY")
    if not cookie_key:
        problems.append("HATIDATA_COOKIE_KEY is missing (a Fernet key: python -c "
                        "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
    elif not is_fernet_key(str(cookie_key)):
        problems.append("HATIDATA_COOKIE_KEY is not a Fernet key (32 url-safe base64-encoded bytes)")
    public_url = str(settings.get("HATIDATA_PUBLIC_URL") or "")
    parts = urlsplit(public_url)
    if not public_url:
        problems.append("HATIDATA_PUBLIC_URL is missing (the external URL, e.g. https://auth.example.com: redirect "
                        "URIs are built from it, never from the Host header)")
    elif (parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname))) \
            or not parts.netloc or parts.query or parts.fragment:
        problems.append("HATIDATA_PUBLIC_URL must be an https:// URL (http:// only on a loopback address) without "
                        "query or fragment")
    metrics_token = settings.get("HATIDATA_METRICS_TOKEN")
    if not metrics_token:
        problems.append("HATIDATA_METRICS_TOKEN is missing (/metrics needs 'Authorization: Bearer <token>' in "
                        "production; generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    elif len(str(metrics_token)) < 24:
        problems.append("HATIDATA_METRICS_TOKEN is weak (fewer than 24 characters)")
    secret_key = settings.get("SECRET_KEY")
    if not secret_key:
        problems.append("SECRET_KEY is missing")
    elif len(str(secret_key)) < 32:
        problems.append("SECRET_KEY is weak (fewer than 32 characters)")
    problems += [f"{name} is {what}" for name, (value, what) in PUBLIC_VALUES.items() if settings.get(name) == value]
    return problems
