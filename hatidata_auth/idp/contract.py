"""The IdP plugin contract suite, shipped as a pytest plugin (entry point ``pytest11``).

Every loaded plugin must pass it. In an external plugin package::

    from hatidata_auth.idp.contract import IdPPluginContract

    class TestJumpCloudContract(IdPPluginContract):
        plugin_names = ["jumpcloud"]     # or leave unset: every installed plugin

The ``idp_plugin`` fixture is parametrized over ``plugin_names`` (default: every plugin the entry points
provide, limited by ``HATIDATA_ENABLED_PLUGINS`` when set in the environment).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from .base import IdPPlugin, class_problems, host_of, instance_problems
from .hosts import guess_idp
from .registry import check_blueprint, discover, load_plugin
from .sign_in import SIGN_IN_REASONS
from .values import PLACEHOLDERS, ConsoleStep, HealthCheck, NormalizedProfile, SetupStatus

_PLACEHOLDER = re.compile(r"{([a-z_]+)}")


def contract_plugin_names() -> list[str]:
    """The plugins the contract runs over by default."""
    enabled = os.environ.get("HATIDATA_ENABLED_PLUGINS")
    names = sorted(discover())
    if enabled:
        wanted = [n.strip() for n in enabled.split(",") if n.strip()]
        names = [n for n in names if n in wanted]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``idp_plugin`` over the class's ``plugin_names`` or every installed plugin."""
    if "idp_plugin" in metafunc.fixturenames:
        names = getattr(metafunc.cls, "plugin_names", None) or contract_plugin_names()
        metafunc.parametrize("idp_plugin", names, indirect=True, ids=names)


@pytest.fixture
def idp_plugin(request: pytest.FixtureRequest) -> IdPPlugin:
    """One plugin loaded through its entry point, checked like at app start-up."""
    sources = discover().get(request.param)
    assert sources, f"no plugin named {request.param!r} is installed"
    assert len(sources) == 1, f"plugin {request.param!r} is installed twice"
    return load_plugin(sources[0])


def _profile(plugin: IdPPlugin, protocol: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "object": "profile", "id": "prof_contract", "organization_id": "org_contract",
        "connection_id": "conn_contract", "connection_type": plugin.connection_types[protocol],
        "idp_id": "contract-user-1", "email": "Ada@Example.test", "first_name": "Ada", "last_name": "Lovelace",
        "name": None, "raw_attributes": {}, "groups": ["HatiData Admins"],
    }
    base.update(fields)
    return base


class IdPPluginContract:
    """The contract tests; subclass it (optionally setting ``plugin_names``) to run it."""

    plugin_names: ClassVar[list[str] | None] = None

    def test_class_metadata_is_valid(self, idp_plugin: IdPPlugin) -> None:
        assert class_problems(type(idp_plugin)) == []
        assert idp_plugin.protocols, "a plugin offers SAML or OIDC"
        assert idp_plugin.display_name.strip()

    def test_hooks_keep_the_contract(self, idp_plugin: IdPPlugin) -> None:
        assert instance_problems(idp_plugin) == []

    def test_wizard_steps_are_complete(self, idp_plugin: IdPPlugin) -> None:
        for protocol in idp_plugin.protocols:
            kinds = [s.kind for s in idp_plugin.wizard_steps(protocol)]
            for required in ("metadata", "role_mapping", "test_login", "activate"):
                assert required in kinds, f"{protocol}: missing a {required} step"

    def test_attribute_map_names_email(self, idp_plugin: IdPPlugin) -> None:
        for protocol in idp_plugin.protocols:
            assert idp_plugin.attribute_map(protocol).email, f"{protocol}: no email attribute"
            for req in idp_plugin.attribute_requirements(protocol):
                assert req.advice, f"{protocol}: {req.field} has no advice for when it is missing"

    def test_console_steps_use_known_placeholders(self, idp_plugin: IdPPlugin) -> None:
        for protocol in idp_plugin.protocols:
            steps = idp_plugin.console_steps(protocol)
            assert steps, f"{protocol}: no console instructions"
            for step in (*steps, *idp_plugin.directory_steps):
                for f in step.fields:
                    unknown = set(_PLACEHOLDER.findall(f.value)) - set(PLACEHOLDERS)
                    assert not unknown, f"unknown placeholders {unknown} in {f.label!r}"
        if idp_plugin.directory_type:
            assert idp_plugin.directory_steps, "a plugin with a directory type explains its setup"

    def test_presets_map_the_three_roles(self, idp_plugin: IdPPlugin) -> None:
        presets = idp_plugin.role_mapping_presets()
        assert presets
        for preset in presets:
            assert {m.role for m in preset.mappings} == {"admin", "developer", "viewer"}
            assert preset.identifier_kind == idp_plugin.group_identifier_kind
            for row in preset.mappings:
                if row.identifier is not None:
                    assert idp_plugin.validate_group_identifier(row.identifier).ok

    def test_group_identifier_refuses_empty(self, idp_plugin: IdPPlugin) -> None:
        assert not idp_plugin.validate_group_identifier("   ").ok

    def test_normalizes_a_profile(self, idp_plugin: IdPPlugin) -> None:
        for protocol in idp_plugin.protocols:
            profile = idp_plugin.normalize_profile(_profile(idp_plugin, protocol))
            assert isinstance(profile, NormalizedProfile)
            assert profile.email == "ada@example.test"
            assert "email" in profile.present
            assert isinstance(profile.groups, tuple)

    def test_normalizes_legacy_raw_attributes(self, idp_plugin: IdPPlugin) -> None:
        names = idp_plugin.attribute_map("saml").as_dict()
        raw = {names[k]: v for k, v in (("email", "ada@example.test"), ("first_name", "Ada")) if k in names}
        profile = idp_plugin.normalize_profile(
            _profile(idp_plugin, "saml", email=None, first_name=None, raw_attributes=raw))
        assert profile.email == "ada@example.test"

    def test_missing_fields_are_reported(self, idp_plugin: IdPPlugin) -> None:
        profile = idp_plugin.normalize_profile(
            _profile(idp_plugin, idp_plugin.protocols[0], email=None, groups=None))
        assert "email" not in profile.present
        assert profile.groups == ()

    def test_metadata_url_validation_refuses_junk(self, idp_plugin: IdPPlugin) -> None:
        for junk in ("", "not a url", "http://insecure.example.test/metadata", "ftp://x.test/m.xml"):
            result = idp_plugin.validate_metadata_url(junk)
            assert not result.ok
            assert result.errors[0].message

    def test_metadata_url_example_is_accepted_or_urls_are_refused(self, idp_plugin: IdPPlugin) -> None:
        example = getattr(idp_plugin, "example_metadata_url", "")
        if "url" in idp_plugin.accepted_metadata_sources:
            assert example, "a plugin taking metadata URLs gives an example_metadata_url"
            assert idp_plugin.validate_metadata_url(example).ok
        else:
            # A file-only IdP must say so rather than accept a URL it cannot use.
            result = idp_plugin.validate_metadata_url("https://idp.example.test/saml/metadata")
            assert not result.ok
            assert result.errors[0].message

    def test_metadata_xml_refuses_hostile_and_foreign_documents(self, idp_plugin: IdPPlugin) -> None:
        from .testing import NOT_SAML_XML, NOT_XML, XML_BOMB, XML_EXTERNAL_ENTITY

        now = datetime.now(UTC)
        for document in (XML_BOMB, XML_EXTERNAL_ENTITY, NOT_SAML_XML, NOT_XML, b""):
            result = idp_plugin.validate_metadata_xml(document, now)
            assert not result.ok
            assert result.errors[0].message

    def test_metadata_xml_refuses_an_expired_certificate(self, idp_plugin: IdPPlugin) -> None:
        from .testing import saml_metadata

        now = datetime.now(UTC)
        example = getattr(idp_plugin, "example_entity_id", "") or "https://idp.example.test/metadata"
        sso = getattr(idp_plugin, "example_sso_url", "") or "https://idp.example.test/sso"
        document = saml_metadata(example, sso, not_after=now - timedelta(days=1))
        assert not idp_plugin.validate_metadata_xml(document, now).ok

    def test_health_checks_have_known_statuses(self, idp_plugin: IdPPlugin) -> None:
        now = datetime.now(UTC)
        for status in (SetupStatus(now=now), SetupStatus(now=now, connection_id="conn_1", connection_state="active",
                                                          certificate_not_after=now + timedelta(days=3))):
            checks = idp_plugin.health_checks(status)
            assert checks
            assert all(isinstance(c, HealthCheck) and c.status in ("ok", "warn", "fail") for c in checks)

    def test_example_urls_are_on_the_declared_hosts(self, idp_plugin: IdPPlugin) -> None:
        # A plugin's own URLs must not read as another IdP's (nor its hosts be claimed by another plugin).
        for url in (idp_plugin.example_metadata_url, idp_plugin.example_sso_url):
            if url and idp_plugin.idp_hosts:
                assert guess_idp(host_of(url)) == idp_plugin.display_name, f"{url} is not on idp_hosts"
            elif url:
                assert guess_idp(host_of(url)) in (None, idp_plugin.display_name), f"{url} is another IdP's"

    def test_every_sign_in_failure_has_a_fix(self, idp_plugin: IdPPlugin) -> None:
        # The sign-ins page shows a fix for every reason, and an unknown reason falls back to ``unknown``'s.
        for protocol in idp_plugin.protocols:
            for reason in (*SIGN_IN_REASONS, "not_a_reason"):
                fix = idp_plugin.sign_in_fix(reason, protocol)
                assert isinstance(fix, str), (protocol, reason)
                assert fix.strip(), (protocol, reason)
            for requirement in idp_plugin.attribute_requirements(protocol):
                fix = idp_plugin.sign_in_fix("missing_attribute", protocol, requirement.field)
                assert (requirement.idp_attribute or requirement.field) in fix, (protocol, requirement.field)
        assert not set(idp_plugin.sign_in_fixes) - set(SIGN_IN_REASONS)

    def test_saml_plugins_give_certificate_rotation_steps(self, idp_plugin: IdPPlugin) -> None:
        # The "Rotate certificate" flow shows these in the IdP's words; without them an admin is left guessing.
        if "saml" in idp_plugin.protocols:
            assert idp_plugin.rotation_steps, "a SAML plugin must give rotation_steps"
            assert all(isinstance(s, ConsoleStep) and s.action.strip() for s in idp_plugin.rotation_steps)

    def test_blueprint_is_namespaced(self, idp_plugin: IdPPlugin) -> None:
        blueprint = idp_plugin.create_blueprint()
        if blueprint is None:
            # No blueprint is allowed only through the base class's default.
            assert type(idp_plugin).create_blueprint is IdPPlugin.create_blueprint
            return
        check_blueprint(idp_plugin, blueprint)
        assert blueprint.name == f"idp_{idp_plugin.name}"
