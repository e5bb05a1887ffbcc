"""Plugin discovery, the allowlist, the local registry override and start-up failures naming the plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask

from hatidata_auth import create_app
from hatidata_auth.idp import IdPPlugin, PluginDefinitionError, PluginLoadError, get_registry
from hatidata_auth.idp.registry import discover
from plugins.okta import OktaPlugin


@pytest.fixture
def make_app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))

    def make(**overrides: Any) -> Flask:
        return create_app({**app_config, **overrides})

    return make


def test_the_four_plugins_come_from_entry_points() -> None:
    found = discover()
    for name in ("okta", "azure", "google", "onelogin"):
        (source,) = found[name]
        assert source.entry_point is not None
        assert source.entry_point.value == f"plugins.{name}:{type(source.load()()).__name__}"


def test_all_installed_plugins_load_by_default(app: Flask) -> None:
    registry = get_registry(app)
    assert {"okta", "azure", "google", "onelogin"} <= set(registry.names())
    for name in ("okta", "azure", "google", "onelogin"):
        assert f"idp_{name}" in app.blueprints
    assert "sso_wizard" in app.blueprints


def test_allowlist_limits_the_plugins(make_app: Any) -> None:
    app = make_app(HATIDATA_ENABLED_PLUGINS=["okta", "google"])
    assert get_registry(app).names() == ["google", "okta"]
    assert "idp_azure" not in app.blueprints


def test_missing_plugin_refuses_to_start(make_app: Any) -> None:
    with pytest.raises(PluginLoadError, match="'pingone' is enabled by HATIDATA_ENABLED_PLUGINS but not installed"):
        make_app(HATIDATA_ENABLED_PLUGINS=["okta", "pingone"])


class NotAPlugin:
    name = "bogus"


class Misnamed(OktaPlugin):
    name = "okta2"


class BadBlueprint(OktaPlugin):
    name = "badbp"

    def create_blueprint(self) -> Blueprint:
        return Blueprint("plugin_badbp", __name__)


class BadSteps(OktaPlugin):
    name = "badsteps"

    def wizard_steps(self, protocol: str = "saml") -> tuple[Any, ...]:
        return super().wizard_steps(protocol)[:-1]


@pytest.mark.parametrize(("local", "message"), [
    ({"bogus": NotAPlugin}, "'bogus' is invalid: local registry is not an IdPPlugin subclass"),
    ({"okta3": Misnamed}, "'okta3' is invalid: the class is named 'okta2'"),
    ({"badbp": BadBlueprint}, "'badbp' is invalid: its blueprint is named 'plugin_badbp', not 'idp_badbp'"),
    ({"badsteps": BadSteps}, "'badsteps' is invalid: wizard_steps('saml') must include a metadata step"),
    ({"ghost": "tests.no_such_module:Plugin"}, "'ghost' failed to import"),
])
def test_invalid_plugin_refuses_to_start(make_app: Any, local: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginLoadError) as info:
        make_app(HATIDATA_LOCAL_PLUGINS=local, HATIDATA_ENABLED_PLUGINS=[*local, "okta"])
    assert message in str(info.value)
    assert str(info.value).startswith("HatiData Auth cannot start: IdP plugin")


def test_duplicate_plugin_refuses_to_start(monkeypatch: pytest.MonkeyPatch, make_app: Any) -> None:
    from importlib.metadata import EntryPoint

    from hatidata_auth.idp import registry

    extra = EntryPoint(name="okta", value="tests.elsewhere:OktaPlugin", group=registry.ENTRY_POINT_GROUP)
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [*real(group=group), extra])
    with pytest.raises(PluginLoadError, match="'okta' is installed twice"):
        make_app()


def test_local_registry_overrides_an_entry_point(make_app: Any) -> None:
    class LocalOkta(OktaPlugin):
        display_name = "Okta (local)"

    app = make_app(HATIDATA_LOCAL_PLUGINS={"okta": LocalOkta}, HATIDATA_ENABLED_PLUGINS=["okta"])
    assert get_registry(app).get("okta").display_name == "Okta (local)"


def test_capability_flags_are_checked_when_the_class_is_defined() -> None:
    with pytest.raises(PluginDefinitionError, match="supports_oidc must be True exactly when"):
        type("Broken", (IdPPlugin,), {"name": "broken", "display_name": "Broken",
                                      "connection_types": {"saml": "GenericSAML"}, "supports_oidc": True})
    with pytest.raises(PluginDefinitionError, match="name must be lower-case"):
        type("Broken", (IdPPlugin,), {"name": "Bad Name", "display_name": "B",
                                      "connection_types": {"saml": "GenericSAML"}})
    with pytest.raises(PluginDefinitionError, match="metadata_source"):
        type("Broken", (IdPPlugin,), {"name": "broken", "display_name": "B", "metadata_source": "ftp",
                                      "connection_types": {"saml": "GenericSAML"}})
