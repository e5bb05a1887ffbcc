"""A ready-made plugin blueprint: a printable setup guide for the customer's IdP administrator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, abort, render_template, request

if TYPE_CHECKING:
    from .base import IdPPlugin


def guide_blueprint(plugin: IdPPlugin, import_name: str) -> Blueprint:
    """Return ``idp_<name>`` with ``GET /admin/sso/idp/<name>/guide``.

    It renders the plugin's own ``idp_<name>/guide.html`` when the plugin ships one, else the core's generic
    guide, which is built from the plugin's metadata (prerequisites, console steps, directory steps, warnings).
    """
    from .views import admin_only, sp_values_for

    bp = plugin.make_blueprint(import_name)

    @bp.get("/guide", endpoint="guide")
    @admin_only
    def guide() -> str:
        protocol = request.args.get("protocol", "saml")
        if protocol not in plugin.protocols:
            abort(404)
        return render_template([f"{plugin.blueprint_name}/guide.html", "sso_wizard/guide.html"],
                               plugin=plugin, protocol=protocol,
                               sp=sp_values_for(plugin))

    return bp
