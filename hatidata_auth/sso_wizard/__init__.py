"""The SSO setup wizard (``/admin/sso/``): its views, steps, guide, service, templates and static files.

It uses the IdP plugins only through the public API, ``hatidata_auth.idp``.
"""

from __future__ import annotations

from flask import Flask

from ..idp import PluginRegistry, check_blueprint
from .guide import add_guide


def init_app(app: Flask, registry: PluginRegistry) -> None:
    """Mount the wizard blueprint ``sso_wizard``, the sign-ins page ``sso_sign_ins`` and the certificate
    rotation ``sso_rotation``, then each plugin's ``idp_<name>`` blueprint (with the setup guide when the
    plugin sets ``setup_guide``); raises
    ``PluginLoadError`` on a misnamed plugin blueprint."""
    from .diagnostics import bp as sign_ins_bp
    from .rotation import bp as rotation_bp
    from .views import bp

    app.register_blueprint(bp)
    app.register_blueprint(sign_ins_bp)
    app.register_blueprint(rotation_bp)
    for plugin in registry:
        blueprint = plugin.create_blueprint()
        if blueprint is not None:
            check_blueprint(plugin, blueprint)
        if plugin.setup_guide:
            blueprint = add_guide(plugin, blueprint or plugin.make_blueprint(type(plugin).__module__))
        if blueprint is not None:
            app.register_blueprint(blueprint)
