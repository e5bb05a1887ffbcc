"""The ``hatidata-auth`` console script (and ``python -m hatidata_auth``): Flask's CLI on :func:`create_app`.

It lives apart from :mod:`hatidata_auth.cli` because the app registers that command group: an entry point
there would import the app back (an import cycle, see ``scripts/check_imports.py``).
"""

from __future__ import annotations

from flask.cli import FlaskGroup

from .app import create_app


def main() -> None:
    """Run Flask's CLI (``hatidata …``, ``run``, ``routes``, ``db …``) on a fresh app from the environment."""
    cli = FlaskGroup(create_app=lambda: create_app())
    cli.main(prog_name="hatidata-auth")


if __name__ == "__main__":
    main()
