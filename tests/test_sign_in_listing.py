"""The sign-in's question to WorkOS (``workos_memberships.listing_for_sign_in``, ``docs/directory-sync.md``): not
asked when the answer cannot decide anything (an active row, an organization not active here), and
WorkOS's answer decides the role over the token's, which was issued under the membership the person held when the
code was exchanged.

All through the real SDK against the emulator; each WorkOS change is made through WorkOS's API.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from hatidata_auth.extensions import db
from hatidata_auth.services import workos_memberships
from tests.support.membership_word import WorkOS, acme_org, membership_of, prepared_acme, sign_in
from tests.support.servers import EmulatorControl
from tests.test_inbox_batch_scope import ACME
from tests.test_membership_rows_race import _store_and_drain
from tests.test_workos_unknown_role import _default_role


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    """Acme, no admin yet (``grant-admin`` makes the first), the environment's roles including slugs not ours."""
    return prepared_acme(app, emulator_control, with_admin=False)


def _asked(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The list calls the sign-in makes from now on (our call to the SDK, counted)."""
    calls: list[Any] = []
    real = workos_memberships._active_memberships

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(workos_memberships, "_active_memberships", counted)
    return calls


def _question_and_answer(app: Flask, person: WorkOS, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    """What a sign-in of *person* into Acme asks WorkOS before it writes anything, and the answer it keeps."""
    asked = _asked(monkeypatch)
    with app.app_context():
        listed = workos_memberships.listing_for_sign_in(db.session(), app.extensions["hatidata_workos"].client,
                                                        ACME, {"id": person.user_id, "email": person.email})
        db.session.remove()
    return asked, listed


def _removed_at_workos(app: Flask, control: EmulatorControl, role: str) -> WorkOS:
    """A person added at WorkOS as *role*, signed in, then removed at WorkOS (every event applied: the row is
    deprovisioned)."""
    person = WorkOS(control, app)
    first = person.add(role)
    sign_in(app, person, role)
    _store_and_drain(app, person.events)
    person.remove(first)
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned"
    return person


def test_a_sign_in_that_catches_up_a_re_add_takes_its_role_not_the_tokens(acme: tuple[Flask, EmulatorControl]
                                                                          ) -> None:
    """Signed in as admin before; removed at WorkOS (the deletion applied); added again (m2) with a slug we do not
    know; the code was exchanged under m1 (the token says admin). The catch-up makes the row m2's with the
    default role, and the token's role does not overwrite it (it did: a break-it review)."""
    app, control = acme
    person = _removed_at_workos(app, control, "admin")
    again = person.add("member")
    m = sign_in(app, person, "admin")
    assert (m.status, m.role, m.workos_membership_id) == ("active", _default_role(app), again), m.details


def test_a_catch_up_without_a_role_to_give_is_refused(acme: tuple[Flask, EmulatorControl]) -> None:
    """The same, in an organization with no default role: the re-add (a slug we do not know) gets no role, so the
    row stays inactive and the sign-in is refused (a version took the catch-up's having applied it for being let
    in, and recorded a session on the inactive membership: a break-it review)."""
    from hatidata_auth.services.login import LoginDenied

    app, control = acme
    person = _removed_at_workos(app, control, "developer")
    with app.app_context():
        acme_org(db.session).default_role = None
        db.session.commit()
        db.session.remove()
    person.add("member")
    with pytest.raises(LoginDenied):
        sign_in(app, person, "developer")
    m = membership_of(app, person)
    assert m is not None
    assert m.status != "active"


def test_no_question_for_a_sign_in_into_an_organization_not_active(acme: tuple[Flask, EmulatorControl],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A sign-in into an organization deleted here is refused whatever WorkOS says: it is not asked first."""
    app, control = acme
    person = WorkOS(control, app)
    person.add("viewer")
    with app.app_context():
        s = db.session()
        acme_org(s).status = "deleted"
        s.commit()
        db.session.remove()
    assert _question_and_answer(app, person, monkeypatch) == ([], [])


def test_a_first_sign_in_asks_once(acme: tuple[Flask, EmulatorControl], monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter above counts: a first sign-in asks once, the next asks nothing (its row is active)."""
    app, control = acme
    person = WorkOS(control, app)
    person.add("viewer")
    asked = _asked(monkeypatch)
    sign_in(app, person, "viewer")
    sign_in(app, person, "viewer")
    assert asked == [(person.user_id, ACME)]
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "active"
