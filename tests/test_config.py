"""Configuration profiles, overrides and the production refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from hatidata_auth import create_app
from hatidata_auth.config import PROFILE_SETTINGS, ConfigError, profile_name, resolve, validate_production

GOOD_PRODUCTION_ENV = {
    "DATABASE_URL": "postgresql+psycopg://hd@db.internal/hatidata",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "WORKOS_API_KEY": "sk_live_abcdefghijklmnop",
    "WORKOS_CLIENT_ID": "client_01ABC",
    "WORKOS_WEBHOOK_SECRET": "whsec_0123456789abcdef",
    "HATIDATA_COOKIE_KEY": Fernet.generate_key().decode(),
    "SECRET_KEY": "s" * 48,
    "HATIDATA_PUBLIC_URL": "https://auth.tenant-host.example",
    "HATIDATA_METRICS_TOKEN": "m" * 32,
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in [*GOOD_PRODUCTION_ENV, "HATIDATA_ENV", "WORKOS_BASE_URL", "HATIDATA_SETTINGS"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))


def test_development_is_the_default_profile() -> None:
    assert profile_name() == "development"


def test_unknown_profile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATIDATA_ENV", "staging")
    with pytest.raises(ConfigError, match="staging"):
        profile_name()


def test_development_embeds_sqlite_a_shared_file_cache_and_the_emulator(tmp_path: Path) -> None:
    app = create_app()
    assert app.config["HATIDATA_ENV"] == "development"
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/hatidata_auth.sqlite3")
    assert app.config["CACHE_TYPE"] == "FileSystemCache"
    assert app.config["WORKOS_BASE_URL"] == "http://127.0.0.1:4100"
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_development_secrets_are_generated_once_and_shared(tmp_path: Path) -> None:
    first, second = create_app(), create_app()
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert first.config["HATIDATA_COOKIE_KEY"] == second.config["HATIDATA_COOKIE_KEY"]
    Fernet(first.config["HATIDATA_COOKIE_KEY"].encode())


def test_environment_overrides_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings_file = tmp_path / "extra.py"
    settings_file.write_text("WORKOS_BASE_URL = 'http://from-file:1'\nHATIDATA_SESSION_CACHE_TTL = 60\n")
    monkeypatch.setenv("HATIDATA_SETTINGS", str(settings_file))
    monkeypatch.setenv("WORKOS_BASE_URL", "http://from-env:2")
    settings = resolve("development")
    assert settings["WORKOS_BASE_URL"] == "http://from-env:2"
    assert settings["HATIDATA_SESSION_CACHE_TTL"] == 60


def test_bad_numeric_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATIDATA_SESSION_CACHE_TTL", "five minutes")
    with pytest.raises(ConfigError, match="HATIDATA_SESSION_CACHE_TTL"):
        resolve("development")


def test_production_refuses_to_start_naming_every_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATIDATA_ENV", "production")
    with pytest.raises(ConfigError) as excinfo:
        create_app()
    message = str(excinfo.value)
    for name in ("DATABASE_URL", "REDIS_URL", "WORKOS_API_KEY", "WORKOS_CLIENT_ID", "WORKOS_WEBHOOK_SECRET",
                 "HATIDATA_COOKIE_KEY", "SECRET_KEY", "HATIDATA_PUBLIC_URL", "HATIDATA_METRICS_TOKEN"):
        assert name in message


@pytest.mark.parametrize(
    ("var", "value", "complaint"),
    [
        ("HATIDATA_COOKIE_KEY", "a-32-character-password-is-not-ok", "not a Fernet key"),
        ("SECRET_KEY", "short", "weak"),
        ("WORKOS_WEBHOOK_SECRET", "abc", "weak"),
        ("WORKOS_WEBHOOK_SECRET", "whsec_hatidata_development", "public default"),
        ("DATABASE_URL", "sqlite:////tmp/x.db", "SQLite"),
        ("WORKOS_API_KEY", "sk_test_emulator", "emulator"),
        ("HATIDATA_PUBLIC_URL", "http://auth.tenant-host.example", "https://"),
        ("HATIDATA_PUBLIC_URL", "http://127.0.0.1.attacker.example:8000", "https://"),
        ("HATIDATA_PUBLIC_URL", "http://10.0.0.7:8000", "https://"),
        ("HATIDATA_PUBLIC_URL", "https://auth.tenant-host.example/?next=x", "https://"),
        ("HATIDATA_METRICS_TOKEN", "short-token", "weak"),
    ],
)
def test_production_refuses_weak_settings(var: str, value: str, complaint: str) -> None:
    problems = validate_production({**_as_settings(GOOD_PRODUCTION_ENV), **_as_settings({var: value})})
    assert len(problems) == 1
    assert var in problems[0]
    assert complaint in problems[0]


SECRETS = ("WORKOS_API_KEY", "WORKOS_WEBHOOK_SECRET", "HATIDATA_COOKIE_KEY", "SECRET_KEY", "HATIDATA_METRICS_TOKEN")
SHIPPED = sorted({(name, str(values[name])) for profile, values in PROFILE_SETTINGS.items() if profile != "production"
                  for name in SECRETS if values.get(name)})


@pytest.mark.parametrize(("var", "value"), SHIPPED)
def test_production_refuses_every_secret_value_this_code_ships(var: str, value: str) -> None:
    """A secret another profile sets is public (it is in this repository): production names it as a problem."""
    problems = validate_production({**_as_settings(GOOD_PRODUCTION_ENV), **_as_settings({var: value})})
    assert [problem for problem in problems if var in problem], problems


@pytest.mark.parametrize("url", ["https://auth.tenant-host.example", "http://127.0.0.1:8000", "http://127.9.9.9",
                                 "http://[::1]:8443", "http://localhost:8000"])
def test_production_accepts_https_or_plain_http_on_loopback_only(url: str) -> None:
    """RFC 8252 allows plain-http redirect URIs only on loopback: benchmarks and local proxies, never the network."""
    settings = {**_as_settings(GOOD_PRODUCTION_ENV), **_as_settings({"HATIDATA_PUBLIC_URL": url})}
    assert validate_production(settings) == []


def test_production_starts_with_good_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in GOOD_PRODUCTION_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("HATIDATA_ENV", "production")
    app = create_app()
    assert app.config["CACHE_TYPE"] == "RedisCache"
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["RATELIMIT_STORAGE_URI"] == GOOD_PRODUCTION_ENV["REDIS_URL"]


def _as_settings(env: dict[str, str]) -> dict[str, str]:
    from hatidata_auth.config import ENV_SETTINGS

    return {ENV_SETTINGS[k][0]: v for k, v in env.items()}


def test_defaults_live_in_one_table() -> None:
    from hatidata_auth import embedding
    from hatidata_auth.config import DEFAULTS, PROFILE_SETTINGS, PROFILES, config_dir, read_settings_file
    from hatidata_auth.workos import WORKOS_DEFAULTS

    # The embedding extension's defaults and the WorkOS client's are the table's own values.
    assert {key: DEFAULTS[key] for key in embedding.DEFAULTS} == embedding.DEFAULTS
    assert {key: DEFAULTS[key] for key in WORKOS_DEFAULTS} == dict(WORKOS_DEFAULTS)
    assert set(PROFILE_SETTINGS) == set(PROFILES)
    for profile in PROFILES:
        assert DEFAULTS.keys() <= resolve(profile, environ={}).keys()
        # A settings file changes its profile; it never repeats a default.
        path = config_dir() / f"{profile}.py"
        written = read_settings_file(path) if path.is_file() else {}
        base = {**DEFAULTS, **PROFILE_SETTINGS[profile]}
        assert [key for key, value in written.items() if key in base and base[key] == value] == []
