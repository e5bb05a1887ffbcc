"""Property (issue #10): whatever Initech's directory and IdP assert about emails on Umbrella's verified domain,
Umbrella's members, roles, keys and sessions stay as they were and no credential gains access in Umbrella."""

from __future__ import annotations

from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.models import ApiKey, AuthSession, Membership
from tests.support.servers import EmulatorControl
from tests.test_tenancy import INITECH, INITECH_DIR, UMBRELLA, UMBRELLA_DIR, new_person, orgs, sign_in, switch

__all__ = ["orgs"]

LOCALS = st.sampled_from(["admin", "dev", "viewer", "Admin", "ceo"])
TAGS = st.sampled_from(["", "+x", "+hatidata"])
# Case variants, a trailing dot, full-width (NFKC-equivalent) letters, a subdomain, a Cyrillic look-alike.
DOMAINS = st.sampled_from(["umbrella.test", "UMBRELLA.TEST", "Umbrella.Test.", "umbrella.test.",
                           "ｕｍｂｒｅｌｌａ.test", "eu.umbrella.test", "umbr\u0435lla.test"])  # noqa: RUF001 - see above
STEPS = st.lists(st.tuples(LOCALS, TAGS, DOMAINS, st.sampled_from(["directory", "directory+login"])),
                 min_size=1, max_size=3)


def umbrella_state(db_session: Any, umbrella: str) -> tuple[Any, ...]:
    db_session.expire_all()
    members = sorted((m.user_id, m.role, m.status) for m in db_session.scalars(
        select(Membership).where(Membership.organization_id == umbrella)))
    keys = sorted((k.id, k.status) for k in db_session.scalars(select(ApiKey).where(
        ApiKey.organization_id == umbrella)))
    sessions = sorted(s.id for s in db_session.scalars(select(AuthSession).where(
        AuthSession.organization_id == umbrella, AuthSession.revoked_at.is_(None))))
    db_session.rollback()
    return members, keys, sessions


def cross_linked(db_session: Any, initech: str, umbrella: str) -> list[str]:
    """Users active in Initech who are also active in Umbrella."""
    both = set(db_session.scalars(select(Membership.user_id).where(Membership.organization_id == initech,
                                                                   Membership.status == "active")))
    both &= set(db_session.scalars(select(Membership.user_id).where(Membership.organization_id == umbrella,
                                                                    Membership.status == "active")))
    db_session.rollback()
    return sorted(both)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_initech_assertions_never_reach_umbrella(steps: list[tuple[str, str, str, str]], app: Flask,
                                                 db_session: Any, orgs: dict[str, str],
                                                 webhooks: EmulatorControl) -> None:
    initech, umbrella = orgs[INITECH], orgs[UMBRELLA]
    before = umbrella_state(db_session, umbrella)
    assert before[0], "Umbrella has members to protect"
    assert cross_linked(db_session, initech, umbrella) == []
    for local, tag, domain, what in steps:
        email = f"{local}{tag}@{domain}"
        new_person(webhooks, INITECH_DIR, email)
        webhooks.flush()
        if what == "directory+login":
            client = app.test_client()
            response = sign_in(client, email, INITECH, webhooks)
            assert response.status_code in (302, 409), response.get_data(as_text=True)
            if response.status_code == 302:
                listed = {o["workos_organization_id"] for o in client.get("/auth/organizations").get_json()["data"]}
                assert UMBRELLA not in listed
                assert switch(client, UMBRELLA).status_code in (403, 409)
        assert umbrella_state(db_session, umbrella) == before
        assert cross_linked(db_session, initech, umbrella) == []


UNVERIFIED = st.sampled_from(["freelance.test", "Partners.Example", "contractors.invalid.", "ｆｒｅｅ.test",  # noqa: RUF001 - a deliberate look-alike
                              "eu.agency.test"])
PEOPLE = st.tuples(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,6})?", fullmatch=True), TAGS, UNVERIFIED)


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(person=PEOPLE)
def test_initech_sign_ins_for_unverified_domains_never_act_in_umbrella(person: tuple[str, str, str], app: Flask,
                                                                      db_session: Any, orgs: dict[str, str],
                                                                      webhooks: EmulatorControl) -> None:
    # The person is a real member of both (both directories list them); nobody verified the domain, so
    # Initech's IdP speaks for them in Initech only: Umbrella needs Umbrella's own sign-in.
    local, tag, domain = person
    email = f"{local}{tag}@{domain}"
    initech, umbrella = orgs[INITECH], orgs[UMBRELLA]
    new_person(webhooks, INITECH_DIR, email)
    new_person(webhooks, UMBRELLA_DIR, email)
    webhooks.flush()
    client = app.test_client()
    assert sign_in(client, email, INITECH, webhooks).status_code == 302
    before = umbrella_state(db_session, umbrella)
    listed = {o["id"]: o for o in client.get("/auth/organizations").get_json()["data"]}
    assert listed[umbrella]["sign_in_required"] is True  # a member there: shown, marked
    refused = switch(client, UMBRELLA)
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"]["details"]["reason"] == "foreign_identity_source"
    assert client.get("/api/v1/me").get_json()["organization_id"] == initech
    assert umbrella_state(db_session, umbrella) == before
