"""A sign-in's role claim is WorkOS's word at the token's issue: it never overrides a newer word the membership
row holds. WorkOS demoted an admin after authenticating them; the demotion's event was applied first and the
sign-in, finishing after it with its token's ``role: admin``, made them an admin again until WorkOS's next word
(a break-it review, F2). The claim is now taken only when the token was certainly issued after the row's WorkOS
version (``workos_memberships.claim_outdated``: in the same second the row wins)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Organization
from hatidata_auth.services import login
from hatidata_auth.services.session_refresh import Tokens
from hatidata_auth.services.sessions import SessionPolicy
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_organization_membership_order import _deliver, _event, _membership, _person

PROMOTED_AT = datetime(2031, 2, 1, tzinfo=UTC).timestamp()  # version 1 of _event
DEMOTED_AT = datetime(2031, 2, 2, tzinfo=UTC).timestamp()  # version 2


@pytest.fixture
def acme_prepared(app: Flask) -> Flask:
    _prepare(app)
    return app


def _sign_in(app: Flask, workos_user_id: str, user_id: str, claims: dict[str, Any]) -> str | None:
    tokens = Tokens(access_token="x", refresh_token="y", user={"id": workos_user_id,
                                                                 "email": f"{user_id}@partners.test"},
                    organization_id=ACME, authentication_method="Password")
    with app.app_context():
        assert db.session.scalar(select(Organization.id).where(Organization.workos_organization_id == ACME))
        result = login.complete_login(db.session(), app.extensions["hatidata_workos"].client, tokens=tokens,
                                      claims={"sid": f"session_claim_{user_id}", "org_id": ACME, **claims},
                                      remember=False, policy=SessionPolicy(), listed=[])
        db.session.commit()
        db.session.remove()
        return result.role


@pytest.mark.parametrize(("issued_at", "claimed", "expected"), [
    (PROMOTED_AT + 3600, "admin", "developer"),  # issued between the promotion and the demotion: old news
    (DEMOTED_AT, "admin", "developer"),  # the demotion's own second: in doubt, WorkOS's word the row holds
    (DEMOTED_AT - 1, "admin", "developer"),
    (DEMOTED_AT + 1, "admin", "admin"),  # issued after it: WorkOS promoted again, its event not here yet
    (DEMOTED_AT + 1, "viewer", "viewer"),
    (None, "admin", "admin"),  # no issue time: the claim stands, as before
    (str(int(PROMOTED_AT + 3600)), "admin", "developer"),  # a numeric string, as the verifier takes it
])
def test_a_claim_older_than_the_rows_word_leaves_its_role(acme_prepared: Flask, issued_at: float | str | None,
                                                          claimed: str, expected: str) -> None:
    app = acme_prepared
    workos_user_id, user_id = _person(app)
    _deliver(app, [_event("created", 1, 1, "admin", workos_user_id), _event("updated", 1, 2, "developer",
                                                                             workos_user_id)])
    claims = {"role": claimed} | ({} if issued_at is None else {"iat": issued_at})
    assert _sign_in(app, workos_user_id, user_id, claims) == expected
    m = _membership(app, user_id)
    assert m is not None
    assert (m.status, m.role) == ("active", expected)


def test_a_claim_on_a_row_without_workos_word_stands(acme_prepared: Flask) -> None:
    """A first sign-in (no row) and a row WorkOS never spoke of take the token's role whatever its age."""
    app = acme_prepared
    workos_user_id, user_id = _person(app)
    assert _sign_in(app, workos_user_id, user_id, {"role": "developer", "iat": 1}) == "developer"
    assert _sign_in(app, workos_user_id, user_id, {"role": "viewer", "iat": 2}) == "viewer"
