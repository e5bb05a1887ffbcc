"""WorkOS REST API blueprints."""

from __future__ import annotations

from flask import Flask

from . import authkit_methods, directory_sync, misc, organizations, sso, user_management


def register_api(app: Flask) -> None:
    """Register every API blueprint on ``app``."""
    for module in (organizations, sso, user_management, authkit_methods, directory_sync, misc):
        app.register_blueprint(module.bp)
