"""Break-it review (issue #11, real-world sequences): a refused organization switch tells the truth.

Initech's directory provisions ``consultant@partners.test`` (an active membership here, role from the
directory) before the consultant ever signed in to Initech, so WorkOS has no Initech membership for them yet.
The consultant, signed in to Acme, switches to Initech: WorkOS answers ``organization_membership_not_found`` and
the switch answers 401 ``session_expired`` ("The session has ended; sign in again."), though the Acme session is
untouched and keeps working. A client believing the answer signs the member out; the member cannot learn that
what is needed is a sign-in through Initech.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, User
from tests.auth_support import ACME, INITECH, cookie_value, csrf_headers, login, sync_organizations

EMAIL = "consultant@partners.test"
UMBRELLA = "org_01HTDQ8A400000000000000001"


# (email, the organization it signs in to, codes the refused switch may answer): WorkOS refuses the move of a
# dev@acme.test session (Acme verified acme.test, so our policy accepts it); a consultant@partners.test session
# (a domain nobody verified) is refused already by our policy (the target must be signed in to itself).
CASES = [(EMAIL, ACME, {"switch_refused", "sso_required"}), ("dev@acme.test", ACME, {"switch_refused"})]


@pytest.mark.parametrize("target", [INITECH, UMBRELLA])
@pytest.mark.parametrize(("email", "home", "codes"), CASES)
def test_a_switch_workos_refuses_is_not_reported_as_an_ended_session(app: Flask, client: FlaskClient,
                                                                      target: str, email: str, home: str,
                                                                      codes: set[str]) -> None:
    orgs = sync_organizations(app)
    assert login(client, email, organization_id=home).status_code == 302
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        db.session.add(Membership(organization_id=orgs[target], user_id=user.id, role="viewer",
                                  role_source="mapping", source="directory", status="active"))
        db.session.commit()
        db.session.remove()
    cookie = cookie_value(client)
    switched = client.post("/auth/switch-organization", json={"organization_id": orgs[target]},
                           headers=csrf_headers(client))
    still = client.get("/api/v1/me")
    assert still.status_code == 200
    assert still.get_json()["organization_id"] == orgs[home]  # the session did not end
    body = switched.get_json()
    assert switched.status_code != 401, body
    assert body["error"]["code"] != "session_expired", body
    # WorkOS refused the move (not the session): 409 saying so, where to sign in instead, the cookie kept.
    assert switched.status_code == 409, body
    assert body["error"]["code"] in codes, body
    assert body["error"]["details"]["login_url"] == f"/auth/login?organization_id={orgs[target]}", body
    assert cookie_value(client) == cookie
