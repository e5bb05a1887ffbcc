"""The CLI does what the README says (issue #15 item 9).

* The ``hatidata-auth`` console script offers every ``flask --app wsgi hatidata …`` command at its top level.
* Commands talk to ``WORKOS_BASE_URL`` (in development, to the emulator on ``WORKOS_EMULATOR_PORT``).
* Every command that calls WorkOS, through either entry point, prints one line naming the URL and what to export,
  and exits 1, when WorkOS is unreachable: no traceback. A new command that calls WorkOS must join the table.
"""

from __future__ import annotations

import inspect
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from hatidata_auth.__main__ import console_group
from hatidata_auth.cli import hatidata_cli
from hatidata_auth.config import ConfigError, resolve
from tests.auth_support import sync_organizations
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]

# Every command that calls WorkOS (or the emulator), with arguments that make it do so.
WORKOS_COMMANDS: dict[str, list[str]] = {
    "sync-organizations": [],
    "seed-demo": [],
    "sync poll": [],
    "sync resync": [],
    "create-organization": ["Newco", "--domain", "newco.test"],
    "grant-admin": ["hooli.test", "new.admin@hooli.test"],
    "rotate-secret": ["webhook-secret", "--endpoint-url", "http://127.0.0.1:1/webhooks/workos"],
    "inbox replay": ["--all-failed"],
    "inbox work": ["--drain"],
    "sso forecast-certificates": [],
}
# Commands of the table that may finish without calling WorkOS when there is nothing to do (empty inbox).
MAY_NOT_CALL = {"inbox replay", "inbox work", "sso forecast-certificates"}


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from _commands(command, path + " ")
        else:
            yield path, command


def test_the_console_script_offers_every_hatidata_command() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hatidata-auth"] == "hatidata_auth.__main__:main"
    console = console_group()
    for name, command in hatidata_cli.commands.items():
        assert console.commands[name] is command, name
    assert "hatidata" not in console.commands  # Flask adds the app's group itself: `hatidata-auth hatidata …`


def test_every_command_calling_workos_is_in_the_table() -> None:
    for path, command in _commands(hatidata_cli):
        source = inspect.getsource(command.callback) if command.callback else ""
        if "hatidata_workos" in source or "WORKOS_BASE_URL" in source:
            assert path in WORKOS_COMMANDS, f"{path} calls WorkOS: add it to WORKOS_COMMANDS"


def test_development_talks_to_the_emulator_port_make_run_used() -> None:
    assert resolve("development", environ={})["WORKOS_BASE_URL"] == "http://127.0.0.1:4100"
    assert resolve("development", environ={"WORKOS_EMULATOR_PORT": "4242"})["WORKOS_BASE_URL"] == \
        "http://127.0.0.1:4242"
    both = {"WORKOS_EMULATOR_PORT": "4242", "WORKOS_BASE_URL": "http://127.0.0.1:5555"}
    assert resolve("development", environ=both)["WORKOS_BASE_URL"] == "http://127.0.0.1:5555"
    with pytest.raises(ConfigError, match="WORKOS_EMULATOR_PORT"):
        resolve("development", environ={"WORKOS_EMULATOR_PORT": "http"})


# These tests build their own apps, never the `app` fixture: pytest-flask would push that app's context, and
# Flask's CLI runs its commands in an app context already pushed instead of the one it builds.


@pytest.fixture
def seeded(app_config: dict[str, Any], emulator: Any, monkeypatch: pytest.MonkeyPatch,
           tmp_path: Path) -> dict[str, Any]:
    """The test database, emptied (other modules' rows would change what a command finds), with the demo
    organizations; yields the configuration (without WorkOS's URL)."""
    from hatidata_auth import create_app
    from tests.conftest import _empty_tables

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    seeder = create_app(app_config)
    _empty_tables(seeder)
    sync_organizations(seeder)
    seeder.extensions["hatidata_workos"].close()
    return {k: v for k, v in app_config.items() if k != "WORKOS_BASE_URL"}


def _environment(config: dict[str, Any], base_url: str) -> dict[str, str]:
    """What an operator exports to run the console script against the test database."""
    env = {"HATIDATA_ENV": "testing", "DATABASE_URL": str(config["SQLALCHEMY_DATABASE_URI"]),
           "SECRET_KEY": str(config["SECRET_KEY"]), "HATIDATA_COOKIE_KEY": str(config["HATIDATA_COOKIE_KEY"]),
           "WORKOS_BASE_URL": base_url, "WORKOS_WEBHOOK_SECRET": str(config["WORKOS_WEBHOOK_SECRET"])}
    if config.get("REDIS_URL"):
        env["REDIS_URL"] = str(config["REDIS_URL"])
    return env


def _flask_cli(config: dict[str, Any], base_url: str, args: list[str]) -> Result:
    """``flask --app wsgi hatidata ARGS`` on an app with *config* talking to *base_url*."""
    from hatidata_auth import create_app

    app = create_app({**config, "WORKOS_BASE_URL": base_url})
    try:
        return app.test_cli_runner().invoke(args=["hatidata", *args])
    finally:
        app.extensions["hatidata_workos"].close()


def test_the_readme_command_lists_the_organizations(seeded: dict[str, Any], emulator: Any) -> None:
    result = CliRunner().invoke(console_group(), ["list-organizations"], env=_environment(seeded, emulator.url))
    assert result.exit_code == 0, result.output
    assert "Acme Corp" in result.output
    assert _flask_cli(seeded, emulator.url, ["list-organizations"]).output == result.output


def _one_clear_line(result: Result, base_url: str) -> None:
    assert not (result.exception and not isinstance(result.exception, SystemExit)), repr(result.exception)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert lines[-1].startswith("Error: WorkOS is unreachable at " + base_url), result.output
    assert "export WORKOS_BASE_URL=" in lines[-1]
    assert "WORKOS_EMULATOR_PORT" in lines[-1]
    assert sum(line.startswith("Error:") for line in lines) == 1


@pytest.mark.parametrize("command", list(WORKOS_COMMANDS))
def test_an_unreachable_workos_is_one_line_not_a_traceback(seeded: dict[str, Any], command: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = [*command.split(), *WORKOS_COMMANDS[command]]
    results = [CliRunner().invoke(console_group(), args, env=_environment(seeded, dead)),
               _flask_cli(seeded, dead, args)]
    for result in results:
        if command in MAY_NOT_CALL and result.exit_code == 0:
            assert "Traceback" not in result.output
            continue
        _one_clear_line(result, dead)


# Arguments that make each command reach its first dependency (a command without an entry needs none).
COMMAND_ARGS: dict[str, list[str]] = {
    **WORKOS_COMMANDS,
    "grant-admin": ["acme", "admin@acme.test"],
    "audit export": ["--organization", "acme"],
    "audit verify-stream": [os.devnull],
}
# Commands that never open the database: they scaffold or list plugin files, or check a received audit stream
# offline (its keys come from the configuration or a file, never from a database row).
NO_DATABASE = {"new-idp-plugin", "list-idp-plugins", "audit verify-stream"}


def _said(result: Result) -> list[str]:
    """What the command printed, without the app's structured log lines."""
    return [line for line in result.output.splitlines() if line.strip() and not line.startswith('{"ts": ')]


def _unmigrated_environment(tmp_path: Path, workos_url: str, **extra: str) -> dict[str, str]:
    """An operator's environment before `db upgrade`: a database file without any table."""
    return {"HATIDATA_ENV": "development", "HATIDATA_INSTANCE_PATH": str(tmp_path / "instance"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}", "WORKOS_BASE_URL": workos_url, **extra}


def test_every_database_command_on_an_unmigrated_database_says_to_upgrade(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule of cli_support: a missing dependency is one line and exit 1, for every command that opens the
    database, through both entry points. WorkOS is unreachable too (a command must not change the shared
    emulator): a command calling WorkOS first names WorkOS, every other one names the schema and the upgrade."""
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    dead = f"http://127.0.0.1:{free_port()}"
    env = _unmigrated_environment(tmp_path, dead)
    upgrade = []
    for path, _command in _commands(hatidata_cli):
        if path in NO_DATABASE:
            continue
        args = [*path.split(), *COMMAND_ARGS.get(path, [])]
        for entry in (args, ["hatidata", *args]):  # `hatidata-auth X` and `hatidata-auth hatidata X`
            result = CliRunner().invoke(console_group(), entry, env=env)
            lines = _said(result)  # the log lines aside
            assert "Traceback" not in result.output, (entry, result.output[-1500:])
            assert (result.exit_code, len(lines)) == (1, 1), (entry, result.output[-1500:])
            if path in WORKOS_COMMANDS and "WorkOS is unreachable" in lines[0]:
                continue
            assert "is not migrated" in lines[0], (entry, lines)
            assert "flask --app wsgi db upgrade" in lines[0], (entry, lines)
            upgrade.append(path)
    assert {"list-organizations", "audit verify", "sign-ins expire", "inbox list-failed", "grant-admin",
            "audit export", "inbox expire"} <= set(upgrade), upgrade


def test_an_unreachable_database_or_redis_is_one_line(emulator: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    dead = free_port()
    env = _unmigrated_environment(tmp_path, emulator.url)
    env["DATABASE_URL"] = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{dead}/nowhere"
    for args in (["list-organizations"], ["audit", "verify"], ["sign-ins", "expire"]):
        result = CliRunner().invoke(console_group(), args, env=env)
        assert (result.exit_code, len(_said(result))) == (1, 1), result.output[-1500:]
        assert f"the database at postgresql+psycopg://postgres:***@127.0.0.1:{dead}/nowhere is unreachable" \
            in result.output
        assert "s3cret" not in result.output  # the password is never printed


def test_the_dependency_rule_classifies_each_failure() -> None:
    """Each dependency's failure, as the drivers raise it, has its line; a fault that is no dependency is shown
    as it is (the traceback a developer needs)."""
    import redis
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    from hatidata_auth.cli_support import dependency_message

    class UndefinedTable(Exception):
        sqlstate = "42P01"

    class SyntaxProblem(Exception):
        sqlstate = "42601"

    ctx = click.Context(click.Command("x"))
    assert "not migrated" in str(dependency_message(OperationalError("s", {}, Exception("no such table: x")), ctx))
    assert "not migrated" in str(dependency_message(ProgrammingError("s", {}, UndefinedTable("relation")), ctx))
    assert "unreachable" in str(dependency_message(OperationalError("s", {}, Exception("refused")), ctx))
    assert "Redis is unreachable" in str(dependency_message(redis.exceptions.ConnectionError("refused"), ctx))
    assert dependency_message(ProgrammingError("s", {}, SyntaxProblem("syntax")), ctx) is None
    assert dependency_message(IntegrityError("s", {}, Exception("unique")), ctx) is None
