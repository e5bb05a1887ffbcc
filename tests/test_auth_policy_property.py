"""Property (issue #10 rule 2): who may vouch for an email in an organization, as :func:`auth_policy.refusal`
decides it for every place a session is made (the callback's login, the refresh, the switch).

Three organizations A (vouching), B (accepting) and C (another); the email's domain is verified by A, by C or
by nobody; the method is SSO through A's connection, through B's own, through an unknown connection, or a
method where WorkOS verified the email itself. The model below is the rule; the policy must agree with it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatidata_auth.models import Organization
from hatidata_auth.services.auth_policy import Authentication, refusal

DOMAIN = st.from_regex(r"[a-z]{2,10}\.(test|example|invalid)", fullmatch=True)
LOCAL = st.from_regex(r"[a-z][a-z0-9.+]{0,10}", fullmatch=True)


def _org(db: Any, name: str, domain: str | None, enforced: bool) -> Organization:
    states = {domain: {"state": "verified", "verification_strategy": "dns"}} if domain else {}
    org = Organization(name=name, domains=[domain] if domain else [], domain_states=states, sso_enforced=enforced,
                       connection_id=f"conn_{name}")
    db.add(org)
    db.flush()
    return org


def _expected(method: str, source: str, owner: str, enforced: bool) -> str | None:
    if enforced and source != "b":
        return "sso_enforced"
    if method != "sso":
        return None
    if owner not in ("none", source):
        return "foreign_domain"  # the domain is someone else's than the vouching organization's
    if source != "b" and owner != source:
        return "foreign_identity_source"  # another organization vouches, without authority for the domain
    return None


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(local=LOCAL, domain=DOMAIN, owner=st.sampled_from(["a", "c", "none", "b"]),
       source=st.sampled_from(["a", "b", "unknown"]), method=st.sampled_from(["sso", "password", "magicauth",
                                                                              "googleoauth"]),
       enforced=st.booleans())
def test_sso_from_another_organization_is_accepted_only_from_the_domains_owner(
        db_session: Any, local: str, domain: str, owner: str, source: str, method: str, enforced: bool) -> None:
    try:
        orgs = {name: _org(db_session, name, domain if owner == name else None, enforced and name == "b")
                for name in ("a", "b", "c")}
        if method == "sso" and source != "unknown":
            auth = Authentication("sso", orgs[source].id, orgs[source].connection_id)
        else:
            auth = Authentication(method)
        expect_source = source if method == "sso" else "none"
        got = refusal(db_session, orgs["b"], auth, f"{local}@{domain}")
        assert got == _expected(method, expect_source, owner, enforced)
    finally:
        db_session.rollback()
