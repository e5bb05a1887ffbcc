"""``hatidata new-idp-plugin``: write a new IdP plugin package that passes the contract out of the box."""

from __future__ import annotations

import re
from pathlib import Path

from .base import NAME_RE
from .registry import discover
from .values import workos_connection_types

DISPLAY_NAME_RE = re.compile(r"\w[\w .,()'+-]{0,59}")
"""What the generated files may hold as it is (a new user's ``Ping "One"`` made none of them parse)."""

PYPROJECT = '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "hatidata-idp-{name}"
version = "0.1.0"
description = "{display_name} plugin for HatiData Auth"
requires-python = ">=3.11"
dependencies = ["hatidata-auth"]

[project.entry-points."hatidata_auth.idp_plugins"]
{name} = "{package}:{cls}"

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.setuptools.package-data]
{package} = ["templates/**/*"]
'''

MODULE = '''"""{display_name}: an IdP plugin for HatiData Auth (see HatiData Auth's docs/plugins.md)."""

from __future__ import annotations

from hatidata_auth.idp import (
    AttributeRequirement,
    ConsoleField,
    ConsoleStep,
    IdPPlugin,
    PluginWarning,
    ValidationResult,
    check_https_url,
    wrong_idp,
)


class {cls}(IdPPlugin):
    """{display_name}."""

    name = "{name}"
    display_name = "{display_name}"
    connection_types = {{"saml": "{connection_type}"}}
    metadata_source = "url"
    group_identifier_kind = "name"
    # The hosts {display_name} serves, so other plugins' wizards recognize a pasted {display_name} URL.
    idp_hosts = (r"(^|\\.){name}\\.example\\.com$",)
    # A printable guide at /admin/sso/idp/{name}/guide, from templates/idp_{name}/guide.html.
    setup_guide = True
    example_metadata_url = "https://{name}.example.com/saml/metadata"
    metadata_help = "Where the admin finds the SAML metadata URL in {display_name}."
    prerequisites = ("An administrator account in {display_name}.",)
    saml_console_steps = (
        ConsoleStep("Create a custom SAML application in {display_name}:", (
            ConsoleField("ACS URL", "{{acs_url}}", copy=True),
            ConsoleField("SP Entity ID", "{{sp_entity_id}}", copy=True),
        )),
        ConsoleStep("Send the attributes email, firstName, lastName and groups; assign the users."),
    )
    rotation_steps = (
        ConsoleStep("In {display_name}, create the application's new signing certificate and download the new "
                    "metadata."),
        ConsoleStep("Make the new certificate the one {display_name} signs with."),
    )
    saml_attributes = (
        AttributeRequirement("email", "email", advice="Map the user's email to the attribute email."),
        AttributeRequirement("first_name", "firstName", advice="Map the first name to firstName."),
        AttributeRequirement("last_name", "lastName", advice="Map the last name to lastName."),
        AttributeRequirement("groups", "groups", required=False, advice="Send the user's groups as groups."),
    )
    known_traps = (
        PluginWarning("{name}-groups", "Only groups assigned to the application are sent.", step="role_mapping"),
    )

    def validate_metadata_url(self, url: str) -> ValidationResult:
        """Accept HTTPS URLs ending in /saml/metadata (tighten this to {display_name}'s real hosts)."""
        checked = check_https_url("metadata_url", url)
        if isinstance(checked, ValidationResult):
            return checked
        other = wrong_idp("metadata_url", checked[0], self.display_name)
        if other:
            return other
        if not checked[1].endswith("/saml/metadata"):
            return ValidationResult.failure("metadata_url", "A {display_name} metadata URL ends with /saml/metadata.")
        return ValidationResult.success(url.strip())
'''

GUIDE = '''{{% extends "sso_wizard/base.html" %}}
{{% block main %}}
<h1>Setting up HatiData single sign-on in {{{{ plugin.display_name }}}}</h1>
{{% with instructions=plugin.console_steps(protocol) %}}{{% include "sso_wizard/_console_steps.html" %}}{{% endwith %}}
{{% endblock %}}
'''

CONTRACT_TEST = '''"""Run HatiData Auth's plugin contract suite against this plugin."""

from hatidata_auth.idp.contract import IdPPluginContract


class Test{cls}Contract(IdPPluginContract):
    plugin_names = ["{name}"]
'''


def scaffold_plugin(destination: Path, name: str, display_name: str, connection_type: str = "GenericSAML"
                    ) -> list[Path]:
    """Write the package ``hatidata-idp-<name>`` under *destination*; returns the files written. Raises
    :class:`ValueError` for what the plugin registry would refuse at start-up (a name that is not one, the name
    of an installed plugin, a connection type that is not one of WorkOS's SAML types) or a display name the
    generated files cannot hold as it is (it is written into Python, TOML and HTML unquoted), and
    :class:`FileExistsError`."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a plugin name (lower-case letters, digits, _; 2-31, a letter first, "
                         "not _ last: the package name hatidata-idp-<name> must be one)")
    installed = discover().get(name)
    if installed:
        raise ValueError(f"an IdP plugin named {name!r} is already installed ({installed[0].origin}): the app "
                         "would refuse to start with two; choose another name")
    if connection_type not in workos_connection_types("saml"):
        raise ValueError(f"{connection_type!r} is not a WorkOS SAML connection type (one of "
                         f"{', '.join(sorted(workos_connection_types('saml')))})")
    if not DISPLAY_NAME_RE.fullmatch(display_name):
        raise ValueError(f"{display_name!r} is not a display name (letters, digits, spaces and . , ( ) - ' +; "
                         "at most 60)")
    root = destination / f"hatidata-idp-{name}"
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    package = f"hatidata_idp_{name}"
    cls = "".join(part.capitalize() for part in re.split(r"_", name)) + "Plugin"
    values = {"name": name, "display_name": display_name, "package": package, "cls": cls,
              "connection_type": connection_type}
    files = {
        root / "pyproject.toml": PYPROJECT.format(**values),
        root / package / "__init__.py": MODULE.format(**values),
        root / package / "templates" / f"idp_{name}" / "guide.html": GUIDE.format(**values),
        root / "tests" / "test_contract.py": CONTRACT_TEST.format(**values),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
