"""Break-it review (issue #10 rule 2): a tenant's identity sources speak only for that tenant.

Umbrella's IT admin controls Umbrella's directory and IdP fully and can assert any email. They add a directory
user ``consultant@partners.test`` (a domain nobody verified; the real consultant is a member of Acme and Globex)
and sign in through Umbrella's own SSO connection. WorkOS (the emulator, like AuthKit's email linking) signs that
in as the consultant's existing WorkOS user. The session is Umbrella's; switching it into Acme or Globex asks
their policy, which only refuses SSO from another organization's connection for a *verified* foreign domain:
the switch is accepted and Umbrella's admin acts as the consultant in Acme/Globex.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import ACME, GLOBEX, csrf_headers, login, sync_organizations
from tests.support.servers import EmulatorControl

UMBRELLA = "org_01HTDQ8A400000000000000001"
UMBRELLA_DIRECTORY = "directory_01HTDQ8D400000000000000001"


@pytest.mark.parametrize("target", [ACME, GLOBEX])
def test_a_session_vouched_by_one_tenants_idp_cannot_switch_into_another_tenant(
        app: Flask, client: FlaskClient, emulator: Any, target: str) -> None:
    orgs = sync_organizations(app)
    control = EmulatorControl(emulator.url)
    control.ctl("POST", f"/directories/{UMBRELLA_DIRECTORY}/users",
                {"email": "consultant@partners.test", "first_name": "Not", "last_name": "Them", "groups": []})
    response = login(client, "consultant@partners.test", organization_id=UMBRELLA)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    me = client.get("/api/v1/me").get_json()
    assert me["organization_id"] == orgs[UMBRELLA]  # Umbrella's IdP vouched for this session, in Umbrella
    switched = client.post("/auth/switch-organization", json={"organization_id": orgs[target]},
                           headers=csrf_headers(client))
    after = client.get("/api/v1/me").get_json()
    assert switched.status_code >= 400, (switched.status_code, switched.get_json())
    assert after.get("organization_id") != orgs[target], after
