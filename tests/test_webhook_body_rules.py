"""``POST /webhooks/workos`` parses nothing before the signature: an unsigned or wrongly signed body is 401 whatever
it holds (no byte of it is parsed), and a signed hostile body meets the same JSON rules as every other route
(``hatidata_auth.inputs``): 400 or 422, never 500, nothing stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth import inputs
from hatidata_auth.models import WebhookEvent

ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_ORG = "org_01HTDQ8A100000000000000001"


def _event(data: Any) -> dict[str, Any]:
    return {"id": "event_RULES", "event": "dsync.user.updated", "created_at": "2030-01-01T00:00:01.000Z",
            "data": data}


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


# Each hostile body with the answer a signed delivery gets: (status, error code).
MALFORMED = st.one_of(st.sampled_from([b"{not json", b'{"id": "x"', b"", b"nul"]).map(
    lambda b: (b, 400, "malformed_event")),
    # The SDK reads the signed payload as UTF-8 text (WorkOS signs JSON text): other bytes cannot carry a signature.
    st.just((b"\xff\xfe{}", 401, "invalid_signature")))
TOO_DEEP = st.integers(min_value=65, max_value=5000).map(lambda n: (b"[" * n + b"]" * n, 400, "invalid_json"))
NOT_FINITE = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400"]).map(
    lambda n: (b'{"id":"event_N","event":"dsync.user.updated","data":{"x":' + n + b"}}", 400, "invalid_json"))
UNSTORABLE = st.one_of(
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff"]).map(lambda s: _event({"email": s})),
    st.sampled_from(["\x00", "\udc00"]).map(lambda k: _event({k: "v"})),
    st.one_of(st.integers(max_value=inputs.INT64_MIN - 1), st.integers(min_value=inputs.INT64_MAX + 1))
    .map(lambda n: _event({"n": n})),
).map(lambda e: (_json(e), 422, "validation_error"))
HOSTILE = st.one_of(MALFORMED, TOO_DEEP, NOT_FINITE, UNSTORABLE)


def _signature(secret: str, body: bytes) -> str:
    stamp = str(int(time.time() * 1000)).encode()
    return f"t={stamp.decode()}, v1={hmac.new(secret.encode(), stamp + b'.' + body, hashlib.sha256).hexdigest()}"


def _post(app: Flask, body: bytes, signature: str | None, content_type: str = "application/json") -> Any:
    headers = {"Content-Type": content_type, **({"WorkOS-Signature": signature} if signature else {})}
    return app.test_client().post("/webhooks/workos", data=body, headers=headers)


def _stored(db_session: Any) -> int:
    count = db_session.scalar(select(func.count()).select_from(WebhookEvent))
    db_session.rollback()
    return int(count or 0)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body our JSON parser is given (a spy on our own module, not on the SDK)."""
    seen: list[bytes] = []
    real = inputs._parse

    def spy(data: bytes, max_depth: int) -> Any:
        seen.append(data)
        return real(data, max_depth)

    monkeypatch.setattr(inputs, "_parse", spy)
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=HOSTILE, forged=st.sampled_from([None, "t=1, v1=00", "garbage", "t=99999999999999, v1=abc"]),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=XX", "text/plain", "application/cloudevents+json"]))
def test_an_unsigned_body_is_401_and_never_parsed(app: Flask, db_session: Any, parses: list[bytes],
                                                  case: tuple[bytes, int, str], forged: str | None,
                                                  content_type: str) -> None:
    body = case[0]
    before, parses[:] = _stored(db_session), []
    response = _post(app, body + b"&a=%00" if "form" in content_type else body, forged, content_type)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "invalid_signature"
    assert parses == []
    assert _stored(db_session) == before


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=HOSTILE)
def test_a_signed_hostile_body_is_refused_as_every_route_refuses_it(app: Flask, db_session: Any,
                                                                    case: tuple[bytes, int, str]) -> None:
    body, status, code = case
    before = _stored(db_session)
    response = _post(app, body, _signature(app.config["WORKOS_WEBHOOK_SECRET"], body))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["error"]["code"] == code
    assert _stored(db_session) == before


def test_a_signed_event_is_parsed_once(app: Flask, db_session: Any, parses: list[bytes]) -> None:
    body = _json({**_event({"object": "directory_user", "id": "directory_user_ONCE", "directory_id": ACME_DIR,
                           "organization_id": ACME_ORG, "idp_id": "00uONCE", "email": "once@acme.test",
                           "first_name": "Once", "last_name": "Only", "state": "active", "custom_attributes": {},
                           "raw_attributes": {}, "created_at": "2030-01-01T00:00:00.000Z",
                           "updated_at": "2030-01-01T00:00:00.000Z"}),
                  "id": "event_ONCE"})
    response = _post(app, body, _signature(app.config["WORKOS_WEBHOOK_SECRET"], body))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert parses == [body]
