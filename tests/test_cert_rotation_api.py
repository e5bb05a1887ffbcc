"""``/api/v1/organization/sso/certificate-rotation``: start (metadata XML or URL), read, switch; the error shape for
bad input; only ``sso:manage`` callers, each reaching only their own organization's rotation."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import csrf_headers, login
from tests.rotation_support import GLOBEX_CONN, metadata_with, pem_and_b64, signed_in_globex_admin

PATH = "/api/v1/organization/sso/certificate-rotation"


@pytest.fixture
def globex_admin(app: Flask, client: FlaskClient, emulator: Any) -> FlaskClient:
    return signed_in_globex_admin(app, client)


def test_start_read_and_switch(globex_admin: FlaskClient) -> None:
    assert globex_admin.get(PATH).status_code == 404
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    body = {"metadata_xml": metadata_with(new_b64).decode()}
    started = globex_admin.post(PATH, json=body, headers=csrf_headers(globex_admin))
    assert started.status_code == 201, started.get_json()
    rotation = started.get_json()
    assert (rotation["state"], rotation["connection_id"], rotation["metadata_source"]) == \
        ("both_trusted", GLOBEX_CONN, "xml")
    again = globex_admin.post(PATH, json=body, headers=csrf_headers(globex_admin))
    assert (again.status_code, again.get_json()["id"]) == (200, rotation["id"])
    assert globex_admin.get(PATH).get_json() == rotation
    switched = globex_admin.post(f"{PATH}/switched", headers=csrf_headers(globex_admin))
    assert (switched.status_code, switched.get_json()["state"]) == (200, "switched")


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"metadata_xml", "metadata_url"}),
    ({"metadata_xml": "<x/>", "metadata_url": "https://login.microsoftonline.com/m.xml"},
     {"metadata_xml", "metadata_url"}),
    ({"metadata_xml": "<not xml"}, {"metadata_xml"}),
    ({"metadata_url": "https://127.0.0.1/metadata.xml"}, {"metadata_url"}),
    ({"metadata_url": "http://login.microsoftonline.com/m.xml"}, {"metadata_url"}),
])
def test_bad_input_is_a_422_naming_the_field(globex_admin: FlaskClient, body: dict[str, Any],
                                             fields: set[str]) -> None:
    answer = globex_admin.post(PATH, json=body, headers=csrf_headers(globex_admin))
    assert answer.status_code == 422, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_metadata"
    assert set(error["details"]["fields"]) == fields
    assert globex_admin.get(PATH).status_code == 404


def test_callers_reach_only_their_own_organization(app: Flask, globex_admin: FlaskClient,
                                                   client: FlaskClient) -> None:
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    assert globex_admin.post(PATH, json={"metadata_xml": metadata_with(new_b64).decode()},
                             headers=csrf_headers(globex_admin)).status_code == 201
    other = app.test_client()
    assert login(other, "admin@acme.test").status_code == 302
    assert other.get(PATH).status_code == 404
    assert other.post(f"{PATH}/switched", headers=csrf_headers(other)).status_code == 404
    viewer = app.test_client()
    assert login(viewer, "dev@globex.test").status_code == 302
    assert viewer.get(PATH).status_code == 403
    no_csrf = globex_admin.post(f"{PATH}/switched")
    assert no_csrf.status_code in (400, 403)
    assert globex_admin.get(PATH).get_json()["state"] == "both_trusted"


def test_a_held_certificate_cryptography_cannot_read_is_rotated_out(globex_admin: FlaskClient,
                                                                     emulator: Any) -> None:
    from tests.test_cert_forecasts import hold_unreadable

    unreadable = hold_unreadable(emulator, GLOBEX_CONN, 20)
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    started = globex_admin.post(PATH, json={"metadata_xml": metadata_with(new_b64).decode()},
                                headers=csrf_headers(globex_admin))
    assert started.status_code == 201, started.get_json()
    assert unreadable in started.get_json()["old_certificate_ids"]
