"""Every URL an admin types is a 422 naming its field when it cannot be parsed, never a 500: the shared
``check_https_url`` reads the port inside its guard, so a non-numeric or out-of-range port, or a broken IPv6 host,
is refused like any other bad URL. Checked over every input that takes a URL: the setup wizard's metadata URL (each
plugin that accepts one) and discovery URL (each OIDC plugin), and the certificate rotation's metadata URL (API and
page); the helper itself and the metadata fetcher never raise anything but their own refusals."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from hatidata_auth.idp import check_https_url
from hatidata_auth.idp.values import ValidationResult
from hatidata_auth.services import metadata_fetch
from tests.auth_support import csrf_headers
from tests.rotation_support import signed_in_globex_admin
from tests.sso_wizard_support import Wizard
from tests.test_sso_wizard_rules import PLUGINS, _to_metadata, assert_errors_name_their_fields

BAD_NETLOCS = ["{host}:abc", "{host}:99999", "{host}:-1", "{host}:4 43", "[::1", "[not-ipv6]"]
ENTRA_URL = "https://login.microsoftonline.com/contoso.com/federationmetadata/2007-06/federationmetadata.xml"
ROTATION_API = "/api/v1/organization/sso/certificate-rotation"
ROTATION_PAGE = "/admin/sso/rotation/start"


def broken(url: str, netloc: str) -> str:
    """*url* with its host:port replaced by the broken *netloc* (``{host}`` stands for the URL's host)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=netloc.format(host=parts.hostname)))


@given(st.text(max_size=80))
def test_the_url_check_never_raises(text: str) -> None:
    for url in (text, f"https://{text}", f"https://idp.example:{text}/metadata"):
        checked = check_https_url("metadata_url", url)
        if isinstance(checked, ValidationResult):
            assert not checked.ok
            assert {e.field for e in checked.errors} == {"metadata_url"}


@pytest.mark.parametrize("netloc", BAD_NETLOCS)
def test_the_url_check_refuses_a_bad_port_or_host_naming_the_field(netloc: str) -> None:
    checked = check_https_url("metadata_url", broken(ENTRA_URL, netloc))
    assert isinstance(checked, ValidationResult)
    assert not checked.ok
    (error,) = checked.errors
    assert error.field == "metadata_url"
    assert "metadata URL" in error.message


@pytest.mark.parametrize("netloc", BAD_NETLOCS)
def test_the_fetcher_refuses_a_bad_port_as_its_own_error(netloc: str) -> None:
    def never(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError("no request may be sent")

    with pytest.raises(metadata_fetch.MetadataFetchError):
        metadata_fetch.fetch(broken(ENTRA_URL, netloc), resolver=lambda host, port: ["20.190.151.7"],
                             transport=httpx2.MockTransport(never))


@pytest.fixture
def admin(app: Flask, client: FlaskClient) -> FlaskClient:
    from tests.auth_support import login, sync_organizations

    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as production does: an exception is a 500
    return client


WIZARD_CASES = [(name, "saml", "metadata_url") for name, p in PLUGINS.items() if "url" in p.accepted_metadata_sources]
WIZARD_CASES += [(name, "oidc", "discovery_endpoint") for name, p in PLUGINS.items() if "oidc" in p.protocols]


@pytest.mark.parametrize("netloc", [BAD_NETLOCS[0], BAD_NETLOCS[1], BAD_NETLOCS[4]])
@pytest.mark.parametrize(("plugin_name", "protocol", "field"), WIZARD_CASES)
def test_a_bad_url_in_the_wizard_is_a_422_naming_the_field(app: Flask, admin: FlaskClient, emulator: Any,
                                                           plugin_name: str, protocol: str, field: str,
                                                           netloc: str) -> None:
    plugin = PLUGINS[plugin_name]
    wizard = Wizard(admin, plugin_name)
    _to_metadata(wizard, plugin, protocol=protocol)
    if field == "metadata_url":
        data = {"source": "url", "metadata_url": broken(plugin.example_metadata_url, netloc),
                "connection_choice": "new"}
    else:
        example = plugin.oidc_discovery_example.replace("<tenant-id>", "9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19")
        data = {"discovery_endpoint": broken(example, netloc), "client_id": "client-1", "client_secret": "s3cret",
                "connection_choice": "new"}
    page = wizard.post("metadata", data)
    assert page.status_code == 422, page.get_data(as_text=True)[:500]
    html = page.get_data(as_text=True)
    assert_errors_name_their_fields(html, f"{plugin_name}/{field}")
    assert f'href="#{field}"' in html


@pytest.fixture
def globex_admin(app: Flask, client: FlaskClient, emulator: Any) -> FlaskClient:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    return signed_in_globex_admin(app, client)


@pytest.mark.parametrize("netloc", BAD_NETLOCS)
def test_a_bad_rotation_metadata_url_is_a_422_naming_the_field(globex_admin: FlaskClient, netloc: str) -> None:
    url = broken(ENTRA_URL, netloc)
    headers = csrf_headers(globex_admin)
    answer = globex_admin.post(ROTATION_API, json={"metadata_url": url}, headers=headers)
    assert answer.status_code == 422, answer.get_data(as_text=True)[:500]
    assert set(answer.get_json()["error"]["details"]["fields"]) == {"metadata_url"}
    page = globex_admin.post(ROTATION_PAGE, headers={"Accept": "text/html"}, content_type="multipart/form-data",
                             data={"metadata_url": url, "csrf_token": headers["X-CSRFToken"]})
    assert page.status_code == 422, page.get_data(as_text=True)[:500]
    assert "metadata URL" in page.get_data(as_text=True)
