"""Break-it review (issue #11, real-world sequences): a refused organization switch tells the truth.

Initech's directory provisions ``consultant@partners.test`` (an active membership here, role from the
directory) before the consultant ever signed in to Initech, so WorkOS has no Initech membership for them yet.
The consultant, signed in to Acme, switches to Initech: WorkOS answers ``organization_membership_not_found`` and
the switch answers 401 ``session_expired`` ("The session has ended; sign in again."), though the Acme session is
untouched and keeps working. A client believing the answer signs the member out; the member cannot learn that
what is needed is a sign-in through Initech.
"""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, User
from tests.auth_support import ACME, INITECH, csrf_headers, login, sync_organizations

EMAIL = "consultant@partners.test"


def test_a_switch_workos_refuses_is_not_reported_as_an_ended_session(app: Flask, client: FlaskClient) -> None:
    orgs = sync_organizations(app)
    assert login(client, EMAIL, organization_id=ACME).status_code == 302
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        assert user is not None
        db.session.add(Membership(organization_id=orgs[INITECH], user_id=user.id, role="viewer",
                                  role_source="mapping", source="directory", status="active"))
        db.session.commit()
        db.session.remove()
    switched = client.post("/auth/switch-organization", json={"organization_id": orgs[INITECH]},
                           headers=csrf_headers(client))
    still = client.get("/api/v1/me")
    assert still.status_code == 200
    assert still.get_json()["organization_id"] == orgs[ACME]  # the session did not end
    body = switched.get_json()
    assert switched.status_code != 401, body
    assert body["error"]["code"] != "session_expired", body
