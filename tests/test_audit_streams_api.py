"""``/api/v1/organization/audit-streams`` (issue #17, item 2): admins create, read, change, pause, delete and
retry sinks; secrets are sealed and never returned (a generated one once); every change is audited; endpoints
are https without credentials and never loopback, link-local or reserved addresses (a bad one is a 422 naming
``endpoint``, for every kind); per-organization limit; another organization's sink is 404."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import STREAM_KINDS, AuditEvent, AuditStream
from hatidata_auth.services import audit_sink_endpoints, secret_seal
from hatidata_auth.services.audit_stream_admin import PURPOSE
from tests.api_support import Tenant, headers_for, make_tenant

STREAMS = "/api/v1/organization/audit-streams"
HEC = "hec-token-0123456789abcdef"


@pytest.fixture
def tenants(app: Flask) -> tuple[Tenant, Tenant]:
    app.config["HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP"] = False  # production's rule
    return make_tenant(app, "Acme"), make_tenant(app, "Globex")


def _post(app: Flask, tenant: Tenant, body: dict[str, Any], role: str = "admin") -> Any:
    return app.test_client().post(STREAMS, json=body, headers=headers_for(tenant, role))


def _actions(app: Flask, tenant: Tenant) -> list[tuple[str, dict[str, Any]]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == tenant.id,
                                                           AuditEvent.action.like("audit_stream.%"))
                                  .order_by(AuditEvent.seq)).all()
        found = [(r.action, dict(r.details)) for r in rows]
        db.session.remove()
    return found


def test_an_admin_manages_a_sink_and_every_change_is_audited(app: Flask, tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = tenants
    client, headers = app.test_client(), headers_for(acme, "admin")
    created = _post(app, acme, {"name": "Splunk", "kind": "splunk_hec", "endpoint": "https://splunk.acme.test:8088",
                                "secret": HEC})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["id"].startswith("ast_")
    assert (body["endpoint"], body["state"], body["cursor"], body["secret"], body["secret_hint"]) == \
        ("https://splunk.acme.test:8088/services/collector/event", "active", 0, None, "…cdef")
    sink = f"{STREAMS}/{body['id']}"
    assert [s["id"] for s in client.get(STREAMS, headers=headers).get_json()["data"]] == \
        [acme.ids["audit_stream"], body["id"]]
    paused = client.patch(sink, json={"enabled": False, "name": "Splunk prod"}, headers=headers).get_json()
    assert (paused["enabled"], paused["state"], paused["name"]) == (False, "paused", "Splunk prod")
    assert client.post(f"{sink}/retry", headers=headers).status_code == 409  # not failing
    resumed = client.patch(sink, json={"enabled": True, "secret": "another-token-0123456789"}, headers=headers)
    assert (resumed.get_json()["state"], resumed.get_json()["secret_hint"]) == ("active", "…6789")
    assert client.delete(sink, headers=headers).status_code == 204
    assert client.get(sink, headers=headers).status_code == 404
    actions = _actions(app, acme)
    assert [a for a, _ in actions] == ["audit_stream.created", "audit_stream.updated", "audit_stream.updated",
                                       "audit_stream.deleted"]
    assert actions[2][1] == {"changed": {"enabled": True, "secret_replaced": True}}
    text = repr(actions)
    assert HEC not in text
    assert "another-token" not in text


def test_secrets_are_sealed_and_a_generated_one_is_shown_once(app: Flask, tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = tenants
    created = _post(app, acme, {"name": "Hook", "kind": "https", "endpoint": "https://siem.acme.test/in"})
    secret = created.get_json()["secret"]
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    again = app.test_client().get(f"{STREAMS}/{created.get_json()['id']}", headers=headers_for(acme, "admin"))
    assert "secret" not in again.get_json()
    assert secret not in again.get_data(as_text=True)
    with app.app_context():
        row = db.session.get(AuditStream, created.get_json()["id"])
        assert row is not None
        assert row.secret_sealed is not None
        assert secret not in row.secret_sealed
        assert secret_seal.unseal(app.config["HATIDATA_COOKIE_KEY"], PURPOSE, row.secret_sealed) == secret
        db.session.remove()
    with pytest.raises(secret_seal.SecretUnreadable):
        secret_seal.unseal(app.config["HATIDATA_COOKIE_KEY"], "another-purpose", row.secret_sealed)


URL_KINDS = ("https", "splunk_hec", "datadog")
BAD_URLS = [
    "http://siem.acme.test/", "ftp://siem.acme.test/", "siem.acme.test", "https://user:pw@siem.acme.test/",
    "https://:pw@siem.acme.test/", "https://siem.acme.test/#x", "https://127.0.0.1/", "https://localhost/",
    "https://LOCALHOST./", "https://169.254.169.254/", "https://[::1]/", "https://[::ffff:169.254.169.254]/",
    # IPv6 forms carrying a forbidden IPv4 address (NAT64, 6to4) and the local-use NAT64 prefix
    "https://[64:ff9b::7f00:1]/", "https://[2002:a9fe:a9fe::1]/", "https://[64:ff9b:1::a00:1]/",
    "https://[fe80::1]/", "https://0.0.0.0/", "https://224.0.0.1/", "https://240.0.0.1/", "https://siem acme.test/",
    "https://siem.acme.test:99999/", "https://siem.acme.test/" + "a" * 2048, "https://sïem.acme.test/", "https://",
    # addresses in the forms inet_aton reads (decimal, hex, octal, short), and numeric hosts that are no address
    "https://2130706433/", "https://0x7f000001/", "https://0177.0.0.1/", "https://127.1/", "https://127.0.1./",
    "https://2852039166/", "https://0xa9fea9fe/", "https://169.254.43518/", "https://0/", "https://999.1/",
    "https://08.1/", "https://siem.acme.0x/",
]
BAD_HOST_PORTS = ["siem.acme.test", "siem.acme.test:0", "siem.acme.test:http", "siem.acme.test:65536",
                  "127.0.0.1:6514", "localhost:6514", "[::1]:6514", "::1:6514", "169.254.169.254:6514",
                  "0.0.0.0:6514", "https://siem.acme.test:6514", "siem_acme.test:6514", ":6514",
                  "2130706433:6514", "0x7f.1:6514", "0177.1:6514", "169.254.43518:6514", "999.1:6514"]
BAD_ENDPOINTS = [*((kind, url) for kind in URL_KINDS for url in BAD_URLS),
                 ("splunk_hec", "https://splunk.acme.test/other/path"), ("datadog", "https://intake.test/api/v1/x"),
                 ("datadog", "https://intake.test/?dd-api-key=leak"),
                 *(("syslog_tls", endpoint) for endpoint in BAD_HOST_PORTS)]


@pytest.mark.parametrize(("kind", "endpoint"), BAD_ENDPOINTS)
def test_a_bad_endpoint_is_a_422_naming_it(app: Flask, tenants: tuple[Tenant, Tenant], kind: str,
                                           endpoint: str) -> None:
    acme, _ = tenants
    secret = None if kind == "syslog_tls" else HEC
    response = _post(app, acme, {"name": "x", "kind": kind, "endpoint": endpoint,
                                 **({"secret": secret} if secret else {})})
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "validation_error"
    assert "endpoint" in response.get_json()["error"]["details"]["fields"]
    assert _actions(app, acme) == []


@given(kind=st.sampled_from(STREAM_KINDS), raw=st.text(max_size=80) | st.from_regex(
    r"\Ahttps?://[a-z0-9.:\[\]@%-]{0,30}(/[ -~]{0,20})?\Z") | st.from_regex(r"\A[a-z0-9.:\[\]-]{0,30}:[0-9a-z]{0,6}\Z"))
def test_any_endpoint_is_accepted_or_refused_by_name_never_an_error(kind: str, raw: str) -> None:
    try:
        result: Any = audit_sink_endpoints.parse(kind, raw)
    except audit_sink_endpoints.InvalidEndpoint as refused:
        result = refused
    if isinstance(result, audit_sink_endpoints.InvalidEndpoint):
        assert (result.status, list(result.details["fields"])) == (422, ["endpoint"])
        return
    assert result.tls
    if kind != "syslog_tls":
        assert result.value.startswith("https://")
        assert "@" not in result.value.split("/")[2]
    literal = audit_sink_endpoints._literal(result.host)
    assert literal is None or audit_sink_endpoints.address_allowed(literal, allow_loopback=False)


def test_a_name_resolving_to_a_forbidden_address_is_refused_at_delivery() -> None:
    endpoint = audit_sink_endpoints.Endpoint("https://localhost/", "localhost", 443, True)
    with pytest.raises(audit_sink_endpoints.ForbiddenAddress):
        audit_sink_endpoints.check_resolved(endpoint, allow_loopback=False)
    audit_sink_endpoints.check_resolved(endpoint, allow_loopback=True)


@pytest.mark.parametrize(("kind", "body", "field"), [
    ("splunk_hec", {}, "secret"), ("datadog", {"secret": "short"}, "secret"),
    ("syslog_tls", {"secret": HEC}, "secret"), ("kafka", {}, "kind"),
])
def test_a_missing_or_unwanted_secret_is_a_422(app: Flask, tenants: tuple[Tenant, Tenant], kind: str,
                                               body: dict[str, Any], field: str) -> None:
    acme, _ = tenants
    endpoint = "siem.acme.test:6514" if kind == "syslog_tls" else "https://siem.acme.test"
    response = _post(app, acme, {"name": "x", "kind": kind, "endpoint": endpoint, **body})
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]["fields"]


def test_loopback_and_plain_http_only_when_the_setting_allows(app: Flask, tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = tenants
    body = {"name": "local", "kind": "https", "endpoint": "http://127.0.0.1:8080/in"}
    assert _post(app, acme, body).status_code == 422
    app.config["HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP"] = True
    assert _post(app, acme, body).status_code == 201
    assert _post(app, acme, {**body, "endpoint": "http://siem.acme.test/in"}).status_code == 422  # not loopback


def test_the_number_of_sinks_is_limited(app: Flask, tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = tenants
    app.config["HATIDATA_AUDIT_STREAMS_MAX"] = 2  # the fixture's tenant has one already
    body = {"name": "s", "kind": "syslog_tls", "endpoint": "siem.acme.test:6514"}
    assert _post(app, acme, body).status_code == 201
    refused = _post(app, acme, body)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"] == {"count": 2, "limit": 2}


def test_start_now_skips_the_existing_chain(app: Flask, tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = tenants
    created = _post(app, acme, {"name": "s", "kind": "syslog_tls", "endpoint": "siem.acme.test:6514",
                                "start": "now"}).get_json()
    with app.app_context():
        head = db.session.scalar(select(AuditEvent.seq).where(AuditEvent.organization_id == acme.id)
                                 .order_by(AuditEvent.seq.desc()).limit(1))
        db.session.remove()
    assert created["cursor"] == head - 1  # the head before its own creation was audited


def test_another_organization_cannot_see_or_change_a_sink(app: Flask, tenants: tuple[Tenant, Tenant]) -> None:
    acme, globex = tenants
    theirs = f"{STREAMS}/{acme.ids['audit_stream']}"
    client, headers = app.test_client(), headers_for(globex, "admin")
    assert acme.ids["audit_stream"] not in client.get(STREAMS, headers=headers).get_data(as_text=True)
    for method, body in (("GET", None), ("PATCH", {"enabled": True}), ("DELETE", None)):
        assert client.open(theirs, method=method, json=body, headers=headers).status_code == 404
    assert client.post(f"{theirs}/retry", headers=headers).status_code == 404
    with app.app_context():
        row = db.session.get(AuditStream, acme.ids["audit_stream"])
        assert row is not None
        assert (row.enabled, row.state) == (False, "paused")
        db.session.remove()


@pytest.mark.parametrize("role", ["developer", "viewer"])
def test_only_audit_readers_manage_sinks(app: Flask, tenants: tuple[Tenant, Tenant], role: str) -> None:
    acme, _ = tenants
    client, headers = app.test_client(), headers_for(acme, role)
    assert client.get(STREAMS, headers=headers).status_code == 403
    assert _post(app, acme, {"name": "s", "kind": "syslog_tls", "endpoint": "siem.acme.test:6514"},
                 role).status_code == 403
