"""The plugin API's boundary: a plugin imports nothing from ``hatidata_auth`` but ``hatidata_auth.idp`` (and only
names it exports), the scaffold generates plugins that keep that rule, the API itself depends on no other part of
``hatidata_auth`` and holds no Flask views, and no IdP host is hard-coded in the core."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hatidata_auth.idp as idp_api
from hatidata_auth.idp import IdPPlugin, get_registry, guess_idp, host_of
from hatidata_auth.idp.registry import discover, load_plugin
from hatidata_auth.idp.scaffold import scaffold_plugin

ROOT = Path(__file__).resolve().parent.parent
IN_REPO_PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/__init__.py"))
API = "hatidata_auth.idp"
#: What a plugin's own tests may use besides the API: the contract suite and the metadata builders.
TEST_MODULES = {API, f"{API}.contract", f"{API}.testing"}


def imports_of(path: Path, package: str) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """Every import in *path* (inside functions too) as (absolute module, imported names, line)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield module, tuple(a.name for a in node.names), node.lineno


def core_imports(files: list[Path], package: str) -> list[tuple[Path, str, tuple[str, ...], int]]:
    """The imports of ``hatidata_auth`` modules in *files*."""
    found = []
    for path in files:
        for module, names, line in imports_of(path, package):
            if module == "hatidata_auth" or module.startswith("hatidata_auth."):
                found.append((path, module, names, line))
    return found


def assert_uses_only_the_api(files: list[Path], package: str, allowed: set[str]) -> None:
    imports = core_imports(files, package)
    wrong = [f"{p.name}:{line} imports {m}" for p, m, _, line in imports if m not in allowed]
    assert not wrong, wrong
    unexported = [f"{p.name}:{line} imports {n} from {m}" for p, m, names, line in imports
                  if m == API for n in names if n not in idp_api.__all__]
    assert not unexported, unexported


def test_the_in_repo_plugins_are_found() -> None:
    assert {p.name for p in IN_REPO_PLUGINS} >= {"okta", "azure", "google", "onelogin"}


@pytest.mark.parametrize("package", IN_REPO_PLUGINS, ids=lambda p: p.name)
def test_a_plugin_imports_only_the_plugin_api(package: Path) -> None:
    files = sorted(package.rglob("*.py"))
    assert files
    assert core_imports(files, f"plugins.{package.name}"), "a plugin subclasses hatidata_auth.idp.IdPPlugin"
    assert_uses_only_the_api(files, f"plugins.{package.name}", {API})


def test_every_installed_plugin_keeps_the_rule() -> None:
    installed = discover()
    assert installed
    for sources in installed.values():
        module = type(load_plugin(sources[0])).__module__
        package = Path(import_module(module).__file__ or "").parent
        assert_uses_only_the_api(sorted(package.rglob("*.py")), module, {API})


def test_the_scaffold_generates_a_plugin_that_keeps_the_rule(tmp_path: Path) -> None:
    written = scaffold_plugin(tmp_path, "pingfed_two", "PingFederate Two", "PingFederateSAML")
    package = tmp_path / "hatidata-idp-pingfed_two"
    code = [p for p in written if p.suffix == ".py" and "tests" not in p.relative_to(package).parts]
    tests = [p for p in written if p.suffix == ".py" and p not in code]
    assert code
    assert tests
    assert_uses_only_the_api(code, "hatidata_idp_pingfed_two", {API})
    assert_uses_only_the_api(tests, "tests", TEST_MODULES)
    assert "flask" not in {m.split(".")[0] for p in code for m, _, _ in imports_of(p, "hatidata_idp_pingfed_two")}


def test_the_api_depends_on_no_other_part_of_the_core() -> None:
    files = sorted((ROOT / "hatidata_auth" / "idp").glob("*.py"))
    for path in files:
        for _, module, _, line in core_imports([path], f"{API}.{path.stem}"):
            assert module == API or module.startswith(f"{API}."), f"{path.name}:{line} imports {module}"


def test_the_rest_of_the_core_uses_plugins_through_the_api_only() -> None:
    # The contract suite and the test helpers are for tests; the core itself sees only the exported names.
    for path in sorted((ROOT / "hatidata_auth").rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        if relative.parts[:2] == ("hatidata_auth", "idp"):
            continue
        package = ".".join(relative.parts if path.name == "__init__.py" else relative.parts[:-1])
        package = package.removesuffix(".__init__")
        for _, module, names, line in core_imports([path], package):
            if module.startswith(API):
                assert module == API, f"{relative}:{line} imports {module}"
                assert set(names) <= set(idp_api.__all__), f"{relative}:{line} imports {names}"


def test_the_api_holds_no_views() -> None:
    # Blueprint/Flask appear only as types of the plugin hooks; a view needs request, render_template and the like.
    for path in sorted((ROOT / "hatidata_auth" / "idp").glob("*.py")):
        for module, names, line in imports_of(path, f"{API}.{path.stem}"):
            if module == "flask" or module.startswith("flask."):
                assert set(names) <= {"Blueprint", "Flask"}, f"{path.name}:{line} imports {names} from {module}"
        text = path.read_text()
        assert ".route(" not in text
        assert "add_url_rule" not in text


def test_everything_exported_exists() -> None:
    assert len(set(idp_api.__all__)) == len(idp_api.__all__)
    for name in idp_api.__all__:
        assert getattr(idp_api, name) is not None, name


def test_no_idp_host_is_hard_coded_in_the_core() -> None:
    # The well-known IdPs' hosts, as a URL or as an escaped regular expression would spell them.
    hosts = re.compile(r"okta(preview|-emea)?\\?\.com|microsoftonline|sts\\?\.windows|accounts\\?\.google"
                       r"|onelogin\\?\.com")
    for old_core_pattern in (r"^accounts\.google\.com$", r"(^|\.)onelogin\.com$", r"^sts\.windows\.net$"):
        assert hosts.search(old_core_pattern)
    for path in sorted((ROOT / "hatidata_auth").rglob("*.py")):
        found = [m.group(0) for m in hosts.finditer(path.read_text().lower())]
        assert not found, f"{path.relative_to(ROOT)} hard-codes IdP hosts {found}"


class PingTestPlugin(IdPPlugin):
    """A plugin defined only here: the built-in plugins learn its hosts from its class, not from the core."""

    name = "pingtest"
    display_name = "Ping Test Identity"
    connection_types = {"saml": "PingFederateSAML"}  # noqa: RUF012 - plugin metadata, as the IdPPlugin contract declares it
    metadata_source = "xml"
    idp_hosts = (r"(^|\.)pingtest\.example$",)


labels = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
paths = st.from_regex(r"(/[A-Za-z0-9_-]{1,12}){0,4}", fullmatch=True)


@given(label=labels, path=paths)
def test_a_url_of_a_newly_declared_idp_is_named_by_every_url_plugin(label: str, path: str) -> None:
    url = f"https://{label}.pingtest.example{path}"
    assert guess_idp(host_of(url)) == PingTestPlugin.display_name
    for plugin in _url_plugins():
        result = plugin.validate_metadata_url(url)
        assert not result.ok
        assert f"This is a {PingTestPlugin.display_name} URL, not {plugin.display_name}'s" in result.errors[0].message


def _url_plugins() -> list[IdPPlugin]:
    plugins = [load_plugin(sources[0]) for sources in discover().values()]
    return [p for p in plugins if "url" in p.accepted_metadata_sources]


def test_each_plugins_example_url_is_refused_by_every_other_plugin_naming_its_idp() -> None:
    plugins = [load_plugin(sources[0]) for sources in discover().values()]
    pairs = [(a, b) for a in plugins for b in _url_plugins()
             if a.name != b.name and a.idp_hosts and (a.example_metadata_url or a.example_sso_url)]
    assert pairs
    for owner, other in pairs:
        url = owner.example_metadata_url or owner.example_sso_url
        result = other.validate_metadata_url(url)
        assert not result.ok, (owner.name, other.name)
        assert f"This is a {owner.display_name} URL" in result.errors[0].message, (owner.name, other.name)


def test_the_guide_is_mounted_for_exactly_the_plugins_that_declare_it(app: object) -> None:
    from flask import Flask

    assert isinstance(app, Flask)
    for plugin in get_registry(app):
        assert (f"{plugin.blueprint_name}.guide" in app.view_functions) == plugin.setup_guide, plugin.name


@pytest.mark.parametrize("display_name", ["O'Reilly Identity (EU)", "Café SSO+", "Ping-One 2.0, Inc."])
def test_every_display_name_the_scaffold_takes_gives_files_that_parse(tmp_path: Path, display_name: str) -> None:
    """The display name is written into Python, TOML and HTML as it is: what the scaffold takes, they hold."""
    written = scaffold_plugin(tmp_path, "awkward", display_name)
    for path in written:
        text = path.read_text()
        if path.suffix == ".py":
            compile(text, str(path), "exec")
        elif path.suffix == ".toml":
            assert tomllib.loads(text)["project"]["description"].startswith(display_name)
    module = next(p for p in written if p.name == "__init__.py").read_text()
    assert f'display_name = "{display_name}"' in module


@pytest.mark.parametrize("display_name", ['Ping "One"', "a{b}", "Line\nbreak", "trailing\n", "x" * 61, "<b>", ""])
def test_the_scaffold_refuses_a_display_name_its_files_cannot_hold(tmp_path: Path, display_name: str) -> None:
    with pytest.raises(ValueError, match="display name"):
        scaffold_plugin(tmp_path, "awkward", display_name)
    assert not (tmp_path / "hatidata-idp-awkward").exists()
