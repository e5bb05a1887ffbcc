"""``new-idp-plugin`` writes only plugins the registry loads: what the scaffold takes passes the checks every
plugin passes at start-up (``class_problems``, ``load_plugin``), and what those checks refuse (a name with a
trailing newline, the name of an installed plugin, a connection type that is not one of WorkOS's SAML types) the
scaffold refuses, writing nothing. A new user's walk-through found all three accepted, the app then refusing to
start (a break-it review)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from workos.types.sso import ConnectionsConnectionType

from hatidata_auth.idp import IdPPlugin
from hatidata_auth.idp.base import PluginDefinitionError, class_problems
from hatidata_auth.idp.registry import PluginSource, discover, load_plugin
from hatidata_auth.idp.scaffold import scaffold_plugin
from hatidata_auth.idp.values import workos_connection_types

PEP508_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)
WORKOS_TYPES = sorted(t.value for t in ConnectionsConnectionType)
names = st.one_of(st.sampled_from(sorted(discover())), st.from_regex(r"[a-z][a-z0-9_]{0,33}\n?", fullmatch=True),
                  st.text(min_size=1, max_size=12))
types = st.one_of(st.sampled_from(WORKOS_TYPES), st.text(max_size=12))


def _plugin_class(written: list[Path], name: str) -> type[IdPPlugin]:
    module_file = next(p for p in written if p.name == "__init__.py" and p.parent.name == f"hatidata_idp_{name}")
    spec = importlib.util.spec_from_file_location(f"scaffolded_{name}", module_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop(spec.name, None)
    return next(v for v in vars(module).values()
                if isinstance(v, type) and issubclass(v, IdPPlugin) and v is not IdPPlugin)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, connection_type=types)
@example(name="acme_", connection_type="GenericSAML")
def test_what_the_scaffold_takes_the_registry_loads(tmp_path: Path, name: str, connection_type: str) -> None:
    destination = tmp_path / "out"
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir()
    try:
        written = scaffold_plugin(destination, name, "Some IdP", connection_type)
    except ValueError:
        assert list(destination.iterdir()) == []  # refused: nothing written
        return
    assert name not in discover()
    assert PEP508_NAME.fullmatch(f"hatidata-idp-{name}")  # pip installs it (a break-it review: "acme_" it refused)
    cls = _plugin_class(written, name)
    assert class_problems(cls) == []
    assert load_plugin(PluginSource(name, "local registry", target=cls)).connection_types == {"saml": connection_type}


@pytest.mark.parametrize(("name", "connection_type", "problem"), [
    ("acme\n", "GenericSAML", "not a plugin name"),
    ("acme_", "GenericSAML", "not a plugin name"),
    (sorted(discover())[0], "GenericSAML", "already installed"),
    ("acme", "OktaOIDC", "not a WorkOS SAML connection type"),
    ("acme", "Acme", "not a WorkOS SAML connection type"),
])
def test_the_scaffold_says_what_the_registry_would_refuse(tmp_path: Path, name: str, connection_type: str,
                                                          problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        scaffold_plugin(tmp_path, name, "Acme SSO", connection_type)
    assert list(tmp_path.iterdir()) == []


def test_a_plugin_class_is_held_to_workos_connection_types() -> None:
    with pytest.raises(PluginDefinitionError) as refused:
        class Wrong(IdPPlugin):
            name = "wrong_types"
            display_name = "Wrong"
            connection_types = {"saml": "OktaOIDC", "oidc": "OktaSAML"}  # noqa: RUF012 - plugin metadata
            supports_oidc = True

    assert "'OktaOIDC' is not a WorkOS SAML connection type" in str(refused.value)
    assert "'OktaSAML' is not a WorkOS OIDC connection type" in str(refused.value)
    for protocol in ("saml", "oidc"):
        assert workos_connection_types(protocol)
        assert all(t in WORKOS_TYPES for t in workos_connection_types(protocol))
    assert not workos_connection_types("saml") & workos_connection_types("oidc")


def test_a_name_with_a_trailing_newline_is_not_a_plugin_name() -> None:
    with pytest.raises(PluginDefinitionError, match="name must be"):
        class Trailing(IdPPlugin):
            name = "trailing\n"
            display_name = "Trailing"
            connection_types = {"saml": "GenericSAML"}  # noqa: RUF012 - plugin metadata
