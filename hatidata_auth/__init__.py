"""HatiData Auth: enterprise SSO, directory sync and session control on top of WorkOS."""

from __future__ import annotations

from .app import create_app
from .embedding import HatiDataAuth

__version__ = "0.1.0"
__all__ = ["HatiDataAuth", "__version__", "create_app"]
