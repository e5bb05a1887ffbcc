"""The printable setup guide for a customer's IdP administrator, offered for plugins that set ``setup_guide``."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from ..idp import IdPPlugin


def add_guide(plugin: IdPPlugin, blueprint: Blueprint) -> Blueprint:
    """Add ``GET /admin/sso/idp/<name>/guide`` (endpoint ``idp_<name>.guide``) to the plugin's *blueprint*.

    It renders the plugin's own ``idp_<name>/guide.html`` when the plugin ships one, else the core's generic
    guide, which is built from the plugin's metadata (prerequisites, console steps, directory steps, warnings).
    """
    from .views import admin_only, sp_values_for

    @admin_only
    def guide() -> str:
        protocol = request.args.get("protocol", "saml")
        if protocol not in plugin.protocols:
            abort(404)
        return render_template([f"{plugin.blueprint_name}/guide.html", "sso_wizard/guide.html"],
                               plugin=plugin, protocol=protocol,
                               sp=sp_values_for(plugin))

    blueprint.add_url_rule("/guide", endpoint="guide", view_func=guide, methods=["GET"])
    return blueprint
