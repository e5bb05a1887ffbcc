"""The ``hatidata-auth`` console script (and ``python -m hatidata_auth``): Flask's CLI on :func:`create_app`.

It offers the ``hatidata`` group's commands at its top level (``hatidata-auth list-organizations`` is
``flask --app wsgi hatidata list-organizations``), beside Flask's own (``run``, ``routes``, ``shell``) and
``db …``; ``hatidata-auth hatidata …`` works too. It lives apart from :mod:`hatidata_auth.cli` because the app
registers that command group: an entry point there would import the app back (an import cycle, see
``scripts/check_imports.py``).
"""

from __future__ import annotations

from typing import Any

import click
from flask.cli import FlaskGroup

from .app import create_app
from .cli import hatidata_cli
from .cli_support import invoke_guarded


class ConsoleGroup(FlaskGroup):
    """Flask's CLI with the ``hatidata`` commands at the top, and WorkOS failures as one line."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a WorkOS failure becomes one line and exit code 1."""
        return invoke_guarded(super().invoke, ctx)


def console_group() -> ConsoleGroup:
    """The console script's command group, built on a fresh app from the environment."""
    cli = ConsoleGroup(name="hatidata-auth", create_app=lambda: create_app(),
                       help="HatiData Auth administration: the `flask --app wsgi hatidata` commands, plus "
                            "Flask's own and `db`.")
    for name, command in hatidata_cli.commands.items():
        cli.add_command(command, name)
    return cli


def main() -> None:
    """Run the console script."""
    console_group().main(prog_name="hatidata-auth")


if __name__ == "__main__":
    main()
