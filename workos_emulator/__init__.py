"""WorkOS emulator: a small Flask server speaking the subset of the WorkOS API that HatiData Auth uses.

Use :func:`create_app` (WSGI app) or ``python -m workos_emulator``; for tests see :mod:`workos_emulator.testing`.
"""

from __future__ import annotations

from .app import create_app

DEFAULT_API_KEY = "sk_test_emulator"
DEFAULT_CLIENT_ID = "client_emulator"

__all__ = ["DEFAULT_API_KEY", "DEFAULT_CLIENT_ID", "create_app", "demo_seed_path"]


def demo_seed_path() -> str:
    """Filesystem path of the bundled demo seed (``seeds/demo.yaml``)."""
    from pathlib import Path

    return str(Path(__file__).parent / "seeds" / "demo.yaml")
