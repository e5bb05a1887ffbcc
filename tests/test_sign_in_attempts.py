"""Sign-in attempts (issue #15, item 4), service level: the typed reason of every WorkOS error code and refusal
we map, the attributes kept and redacted, the merge of our callback's and WorkOS's sightings of one attempt,
tenant isolation and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.idp import GENERIC_FIXES, SIGN_IN_REASONS, get_registry
from hatidata_auth.models import AuditEvent, Organization, SignInAttempt
from hatidata_auth.services import auth_policy, paging, sign_in_attempts, sign_in_retention
from hatidata_auth.services.events import EventContext, handler_for
from hatidata_auth.services.events.authentication import AUTHENTICATION_EVENT_TYPES
from hatidata_auth.services.sign_in_attempts import Seen
from tests.auth_support import ACME, GLOBEX, sync_organizations

# The test's own statement of the mapping (not read from the service): WorkOS's code -> our reason.
WORKOS_CODES = {
    "access_denied": "not_assigned_to_app",
    "connection_invalid": "connection_inactive",
    "connection_unlinked": "connection_inactive",
    "organization_invalid": "connection_inactive",
    "connection_domain_invalid": "email_outside_domains",
    "profile_not_allowed_outside_organization": "email_outside_domains",
    "connection_strategy_invalid": "idp_error",
    "signin_consent_denied": "idp_error",
    "oauth_failed": "idp_error",
    "server_error": "idp_error",
    "mfa_challenge_failed": "idp_error",
}
IDP_WORDS = {
    "User is not assigned to the client application.": "not_assigned_to_app",
    "AADSTS50105: The signed in user is not assigned to a role for the application.": "not_assigned_to_app",
    "app_not_configured_for_user: Service is not configured for this user.": "not_assigned_to_app",
    "The SAML response is missing the attribute firstName.": "missing_attribute",
    "Required claim email is missing": "missing_attribute",
    "The signing certificate has expired.": "certificate_expired",
    "The connection is inactive.": "connection_inactive",
}
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


@pytest.mark.parametrize(("code", "reason"), sorted(WORKOS_CODES.items()))
def test_every_mapped_workos_error_code_has_its_reason(code: str, reason: str) -> None:
    assert sign_in_attempts.classify(code, None) == reason
    assert sign_in_attempts.classify(code.upper(), "") == reason
    assert set(sign_in_attempts.WORKOS_ERROR_REASONS) == set(WORKOS_CODES)  # nothing mapped the test does not state


@pytest.mark.parametrize(("message", "reason"), sorted(IDP_WORDS.items()))
def test_the_idps_words_name_the_reason_before_the_generic_code(message: str, reason: str) -> None:
    assert sign_in_attempts.classify("server_error", message) == reason
    assert sign_in_attempts.classify(None, message) == reason


def test_the_missing_attribute_is_read_from_the_message() -> None:
    assert sign_in_attempts.missing_attribute("The SAML response is missing the attribute firstName.") == "firstName"
    assert sign_in_attempts.missing_attribute("Required claim email is missing") == "email"
    assert sign_in_attempts.missing_attribute("Something else went wrong") is None


@pytest.mark.parametrize("refusal", sorted(auth_policy.MESSAGES))
def test_every_policy_refusal_has_a_typed_reason(refusal: str) -> None:
    assert sign_in_attempts.refusal_reason(refusal) in {"policy_refused", "email_outside_domains"}


@given(code=st.text(max_size=40), message=st.text(max_size=200))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_classify_always_answers_a_documented_reason(code: str, message: str) -> None:
    reason = sign_in_attempts.classify(code, message)
    assert reason in SIGN_IN_REASONS
    if code.strip().lower() not in WORKOS_CODES and not any(p.search(message)
                                                          for p, _ in sign_in_attempts.MESSAGE_REASONS):
        assert reason == "unknown"


def test_attributes_keep_no_credential_and_are_cut() -> None:
    kept = sign_in_attempts.clean_attributes({
        "email": "a@acme.test", "access_token": "eyJ...", "SAMLResponse": "PHNhbWw+", "code": "01H...",
        "refresh_token": "r", "client_secret": "s", "groups": ["HatiData Admins", "x" * 500], "first_name": None,
        **{f"attr{i}": "v" for i in range(80)}})
    assert not {"access_token", "SAMLResponse", "code", "refresh_token", "client_secret", "first_name"} & set(kept)
    assert kept["groups"] == ["HatiData Admins", "x" * sign_in_attempts.MAX_VALUE_LENGTH]
    assert len(kept) == sign_in_attempts.MAX_ATTRIBUTES
    assert sign_in_attempts.redact({"email": "a@acme.test", "groups": ["a", "b"]}) == {
        "email": "[redacted]", "groups": ["[redacted]", "[redacted]"]}


def _seen(org: str, **kw: Any) -> Seen:
    return Seen(**{"organization_id": org, "kind": "sign_in", "outcome": "failure", "occurred_at": NOW, **kw})


def _event(code: str | None = "access_denied", *, session_id: str | None = None, email: str = "dev@acme.test",
           connection: str = "conn_1", message: str = "User is not assigned to the client application.") -> Any:
    data: dict[str, Any] = {"type": "sso", "status": "failed" if code else "succeeded", "email": email,
                            "ip_address": "203.0.113.9", "user_agent": "UA", "user_id": "user_1",
                            "sso": {"organization_id": "org_w", "connection_id": connection, "session_id": session_id}}
    if code:
        data["error"] = {"code": code, "message": message}
    return data


def _page(session: Any, org: str, fix: Any = None, **filters: Any) -> list[sign_in_attempts.AttemptView]:
    fixes = fix or sign_in_attempts.fixer(())
    return list(sign_in_attempts.attempts_page(session, org, paging.PageRequest(None, 100), fixes, **filters).items)


def test_a_failure_seen_by_both_paths_is_one_attempt_in_either_order(app: Flask, db_session: Any,
                                                                     orgs: dict[str, str]) -> None:
    acme = orgs[ACME]
    # Our callback first, then WorkOS's event.
    sign_in_attempts.record_callback(db_session, _seen(acme, kind="test", reason="not_assigned_to_app",
                                                       error_code="access_denied", connection_id="conn_1"))
    sign_in_attempts.record_event(db_session, organization_id=acme, event_id="event_1",
                                  event_type="authentication.sso_failed", data=_event(),
                                  occurred_at=NOW + timedelta(minutes=1), idp_plugin="okta")
    # WorkOS's event first, then our callback.
    sign_in_attempts.record_event(db_session, organization_id=acme, event_id="event_2",
                                  event_type="authentication.sso_failed", data=_event(connection="conn_2"),
                                  occurred_at=NOW + timedelta(hours=1))
    sign_in_attempts.record_callback(db_session, _seen(acme, reason="not_assigned_to_app",
                                                       error_code="access_denied", connection_id="conn_2",
                                                       occurred_at=NOW + timedelta(hours=1, minutes=2)))
    # Outside the window, a new attempt; the same event again, nothing.
    sign_in_attempts.record_callback(db_session, _seen(acme, error_code="access_denied", connection_id="conn_1",
                                                       occurred_at=NOW + timedelta(hours=3)))
    assert sign_in_attempts.record_event(db_session, organization_id=acme, event_id="event_1",
                                         event_type="authentication.sso_failed", data=_event(),
                                         occurred_at=NOW) is None
    db_session.commit()
    rows = _page(db_session, acme)
    assert [r.sources for r in rows] == [("callback",), ("callback", "event"), ("callback", "event")]
    merged = rows[2]
    assert (merged.kind, merged.reason, merged.email, merged.idp_plugin) == (
        "test", "not_assigned_to_app", "dev@acme.test", "okta")


def test_a_success_is_matched_by_its_workos_session_and_our_refusal_wins(app: Flask, db_session: Any,
                                                                         orgs: dict[str, str]) -> None:
    acme = orgs[ACME]
    sign_in_attempts.record_callback(db_session, _seen(acme, outcome="success", workos_session_id="session_a",
                                                       attributes={"email": "a@acme.test"}))
    sign_in_attempts.record_event(db_session, organization_id=acme, event_id="event_a",
                                  event_type="authentication.sso_succeeded", data=_event(None, session_id="session_a"),
                                  occurred_at=NOW)
    # WorkOS let this one in, we refused it (a suspended membership): one attempt, a failure.
    sign_in_attempts.record_event(db_session, organization_id=acme, event_id="event_b",
                                  event_type="authentication.sso_succeeded", data=_event(None, session_id="session_b"),
                                  occurred_at=NOW)
    sign_in_attempts.record_callback(db_session, _seen(acme, reason="not_a_member", error_code="denied",
                                                       workos_session_id="session_b"))
    assert sign_in_attempts.record_event(db_session, organization_id=acme, event_id="event_c",
                                         event_type="authentication.sso_started", data=_event(None),
                                         occurred_at=NOW) is None
    db_session.commit()
    by_outcome = {r.outcome: r for r in _page(db_session, acme)}
    assert len(_page(db_session, acme)) == 2
    assert by_outcome["success"].sources == ("callback", "event")
    assert by_outcome["failure"].reason == "not_a_member"
    assert by_outcome["failure"].sources == ("callback", "event")


def test_another_organizations_attempts_are_never_read(app: Flask, db_session: Any, orgs: dict[str, str]) -> None:
    acme, globex = orgs[ACME], orgs[GLOBEX]
    mine = sign_in_attempts.record_callback(db_session, _seen(acme, email="dev@acme.test", reason="no_role"))
    theirs = sign_in_attempts.record_callback(db_session, _seen(globex, email="dev@globex.test",
                                                                reason="no_role", connection_id="conn_1"))
    # A failure of another organization with the same code never merges into ours.
    sign_in_attempts.record_event(db_session, organization_id=globex, event_id="event_g",
                                  event_type="authentication.sso_failed", data=_event(connection="conn_x"),
                                  occurred_at=NOW)
    db_session.commit()
    assert [r.id for r in _page(db_session, acme)] == [mine.id]
    assert sign_in_attempts.find(db_session, acme, theirs.id) is None
    assert {r.organization_id for r in _page(db_session, globex)} == {globex}
    assert _page(db_session, acme, email="dev@globex.test") == []


def test_filters_fixes_and_redaction(app: Flask, db_session: Any, orgs: dict[str, str]) -> None:
    acme = orgs[ACME]
    sign_in_attempts.record_callback(db_session, _seen(acme, idp_plugin="okta", reason="not_assigned_to_app",
                                                       email="Dev@Acme.test", attributes={"email": "dev@acme.test"}))
    sign_in_attempts.record_callback(db_session, _seen(acme, idp_plugin="okta", reason="missing_attribute",
                                                       attribute="firstName", connection_id="conn_9"))
    sign_in_attempts.record_callback(db_session, _seen(acme, outcome="success", workos_session_id="s1",
                                                       idp_plugin="nope"))
    db_session.commit()
    fix = sign_in_attempts.fixer(get_registry(app))
    assigned, = _page(db_session, acme, fix, reason="not_assigned_to_app")
    assert assigned.fix is not None
    assert "Okta" in assigned.fix
    assert "Assignments" in assigned.fix
    assert assigned.attributes == {"email": "[redacted]"}
    assert not assigned.attributes_revealed
    assert assigned.email == "dev@acme.test"
    missing, = _page(db_session, acme, fix, reason="missing_attribute")
    assert missing.fix is not None
    assert "firstName" in missing.fix
    success, = _page(db_session, acme, fix, outcome="success")
    assert success.fix is None
    assert len(_page(db_session, acme, fix, email="DEV@acme.test ")) == 1
    revealed = sign_in_attempts.attempts_page(db_session, acme, paging.PageRequest(None, 10), fix,
                                              reveal=[assigned.id]).items
    assert {r.id: r.attributes for r in revealed}[assigned.id] == {"email": "dev@acme.test"}
    for bad in ({"reason": "nope"}, {"outcome": "maybe"}):
        with pytest.raises(sign_in_attempts.UnknownFilter):
            _page(db_session, acme, fix, **bad)
    # A plugin we do not know gets the generic fix.
    assert sign_in_attempts.fixer(())(None, "no_role", None) == GENERIC_FIXES["no_role"]


def test_pages_run_newest_first_without_gaps(app: Flask, db_session: Any, orgs: dict[str, str]) -> None:
    acme = orgs[ACME]
    ids = [sign_in_attempts.record_callback(db_session, _seen(acme, error_code=f"e{i}")).id for i in range(7)]
    db_session.commit()
    seen, after = [], None
    while True:
        page = sign_in_attempts.attempts_page(db_session, acme, paging.PageRequest(after, 3),
                                              sign_in_attempts.fixer(()))
        seen += [a.id for a in page.items]
        if page.next_key is None:
            break
        after = page.next_key
    assert seen == sorted(ids, reverse=True)


def test_retention_deletes_only_expired_attempts_and_is_audited(app: Flask, db_session: Any,
                                                                orgs: dict[str, str]) -> None:
    acme, globex = orgs[ACME], orgs[GLOBEX]
    now = datetime.now(UTC)
    for org, age in ((acme, 31), (globex, 45), (acme, 29), (globex, 1)):
        sign_in_attempts.record_callback(db_session, _seen(org, error_code=f"age{age}",
                                                           occurred_at=now - timedelta(days=age)))
    db_session.commit()
    deleted = sign_in_retention.expire(db_session, retention_days=30, cause=Cause.system("test"), now=now)
    assert deleted == 2
    left = db_session.scalars(select(SignInAttempt.error_code).order_by(SignInAttempt.error_code)).all()
    assert left == ["age1", "age29"]
    event = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "sign_in_attempts.expired")).one()
    assert event.details["deleted"] == 2
    with pytest.raises(sign_in_retention.InvalidRetention):
        sign_in_retention.expire(db_session, retention_days=0, cause=Cause.system("test"))


def test_the_cli_expires_with_the_configured_retention(app: Flask, db_session: Any, orgs: dict[str, str]) -> None:
    acme = orgs[ACME]
    now = datetime.now(UTC)
    for age in (3, 8):
        sign_in_attempts.record_callback(db_session, _seen(acme, error_code=f"age{age}",
                                                           occurred_at=now - timedelta(days=age)))
    db_session.commit()
    app.config["HATIDATA_SIGN_IN_ATTEMPTS_RETENTION_DAYS"] = 5
    result = app.test_cli_runner().invoke(args=["hatidata", "sign-ins", "expire"])
    assert result.exit_code == 0, result.output
    assert "1 sign-in attempt(s) older than 5 days deleted" in result.output
    assert db_session.scalar(select(func.count()).select_from(SignInAttempt)) == 1


def test_a_reveal_is_audited_naming_the_attempts(app: Flask, db_session: Any, orgs: dict[str, str]) -> None:
    acme = orgs[ACME]
    row = sign_in_attempts.record_callback(db_session, _seen(acme, attributes={"email": "a@acme.test"}))
    cause = Cause.by(Actor("user", "usr_1", "admin@acme.test"))
    sign_in_attempts.audit_reveal(db_session, acme, [row.id, row.id], cause)
    sign_in_attempts.audit_reveal(db_session, acme, [], cause)  # nothing shown, nothing audited
    db_session.commit()
    events = db_session.scalars(select(AuditEvent).where(
        AuditEvent.action == "sign_in_attempts.attributes_revealed")).all()
    assert [(e.organization_id, e.details["attempt_ids"], e.actor_email) for e in events] == [
        (acme, [row.id], "admin@acme.test")]


@pytest.mark.parametrize("event_type", sorted(AUTHENTICATION_EVENT_TYPES))
def test_every_authentication_event_type_through_the_handler(app: Flask, db_session: Any, orgs: dict[str, str],
                                                             event_type: str) -> None:
    acme = db_session.get(Organization, orgs[ACME])
    data = _event("access_denied" if event_type.endswith("_failed") else None, session_id="sess_x")
    data["sso"]["organization_id"] = acme.workos_organization_id
    handler_for(event_type)(EventContext(db_session, None, "event_x", event_type, NOW), data)
    db_session.commit()
    rows = _page(db_session, acme.id)
    ends_an_attempt = {"authentication.sso_succeeded": "success", "authentication.sso_failed": "failure",
                       "authentication.sso_timed_out": "failure"}
    assert [r.outcome for r in rows] == ([ends_an_attempt[event_type]] if event_type in ends_an_attempt else [])
    if event_type == "authentication.sso_failed":
        assert rows[0].reason == "not_assigned_to_app"
        assert rows[0].sources == ("event",)
