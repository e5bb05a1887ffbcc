"""Raw-input fuzzing of every route of the URL map: bad input is a 4xx, never a 5xx or a traceback.

For each rule of ``app.url_map`` and each of its methods, hypothesis sends random path parameters (real
identifiers, over-long, NUL, invalid UTF-8, encoded surrogates), query strings (cursors carrying huge integers,
NUL bytes, invalid percent-escapes), headers and bodies (random bytes, nesting up to 100,000 levels, huge
numbers, ``\\ud800`` escapes, ``\\u0000``, huge strings, form and multipart bodies under any content type), as
an unauthenticated caller, as an admin API key and as an admin cookie session carrying a CSRF token.

``HATIDATA_FUZZ_EXAMPLES`` sets the examples per route, method and caller (CI: the default below).
Testing mode propagates exceptions, so an unhandled error fails the example as surely as a 5xx does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.routing import Rule

from hatidata_auth.extensions import db
from tests.api_support import Tenant, headers_for, make_tenant
from tests.auth_support import csrf_headers, login, sync_organizations

EXAMPLES = int(os.environ.get("HATIDATA_FUZZ_EXAMPLES", "8"))
CALLERS = ("anonymous", "api_key", "cookie")
QUERY_NAMES = ("cursor", "limit", "action", "actor_id", "actor_type", "actor_email", "target_type", "target_id",
               "outcome", "since", "until", "format", "email", "role", "status", "source", "code", "state",
               "error", "organization_id", "return_to", "email_hint", "login_hint", "step", "x")
BODY_FIELDS = ("name", "scopes", "grace_seconds", "expires_at", "reason", "user_id", "role", "identifier_kind",
               "group_identifier", "priority", "mappings", "groups", "session_cache_ttl", "active_ttl",
               "remembered_ttl", "sso_enforced", "organization_id", "event", "data", "id", "metadata_url",
               "metadata_xml", "client_id", "client_secret", "discovery_url", "domain", "value")


# --- values ------------------------------------------------------------------------------------------------

def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


huge_ints = st.sampled_from([10**18, 10**40, -(10**40), 2**63, -(2**63) - 1, 10**4000]) | st.integers()
nasty_text = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "", " ", "é", "𝕏", "x" * 70_000]) | st.text()  # noqa: RUF001 - a deliberate look-alike
# Instants whose UTC form (or a day's arithmetic on it) leaves years 1-9999, and other calendar edges.
edge_instants = st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z",
                                 "9999-12-31T23:59:59.999999Z", "9999-12-31", "0001-01-01", "2024-02-30T00:00:00Z",
                                 "2024-01-01T00:00:00+24:00", "+10000-01-01T00:00:00Z", "1e400"])
json_scalars = (st.none() | st.booleans() | huge_ints | st.floats(allow_nan=False, allow_infinity=False)
                | nasty_text | edge_instants)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(BODY_FIELDS) | nasty_text, inner, max_size=5),
                           max_leaves=12)
cursor_values = st.builds(_cursor, huge_ints | nasty_text | st.just(True) | st.floats(allow_nan=False)
                          | st.lists(st.integers(), max_size=2)) | st.text(max_size=40)
raw_bytes = st.binary(max_size=300) | st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"%", b"%zz", b"\x00"])


def _escape(text: str) -> str:
    """JSON text for *text*, writing surrogates and NULs as ``\\uXXXX`` escapes (as a client would)."""
    return json.dumps(text)


def _json_text(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([33, 100, 1_000, 10_000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    leaf = draw(st.sampled_from(["1", "null", '"x"']))
    return (opener * depth + leaf + closer * depth).encode()


bodies = st.one_of(
    st.just(b""),
    raw_bytes,
    deep_json(),
    st.builds(_json_text, json_values),
    st.builds(lambda k, v: f'{{{_escape(k)}: "\\ud800", "n": {v}}}'.encode(), st.sampled_from(BODY_FIELDS),
              st.sampled_from(["1" + "0" * 40, "1e400", "-1e400", "NaN", "Infinity", "1" * 5000])),
    st.builds(lambda k: f'{{{_escape(k)}: "a\\u0000b"}}'.encode(), st.sampled_from(BODY_FIELDS)),
    st.builds(lambda n: b'{"name": "' + b"x" * n + b'"}', st.sampled_from([10_000, 1_100_000])),
    st.builds(lambda pairs: "&".join(f"{quote_from_bytes(k.encode('utf-8', 'surrogatepass'))}="
                                     f"{quote_from_bytes(v.encode('utf-8', 'surrogatepass'))}"
                                     for k, v in pairs).encode(),
              st.lists(st.tuples(st.sampled_from(BODY_FIELDS), nasty_text), max_size=4)),
)
json_types = st.sampled_from(["application/json", "application/merge-patch+json", "application/json; charset=utf-8"])
content_types = st.sampled_from([None, "application/json", "application/json; charset=latin-1",
                                 "application/merge-patch+json", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain",
                                 "application/octet-stream", "application/jsonx", "*/*;;=", "json"])


@st.composite
def path_values(draw: st.DrawFn, known: list[str]) -> str:
    """A percent-encoded path segment: a real identifier, or bytes no identifier has."""
    choice = draw(st.sampled_from(["known", "text", "long", "nul", "bytes"]))
    if choice == "known" and known:
        return quote_from_bytes(draw(st.sampled_from(known)).encode(), safe="")
    if choice == "long":
        return "a" * draw(st.sampled_from([256, 5_000, 60_000]))
    if choice == "nul":
        return "%00" + quote_from_bytes(draw(st.text(max_size=10)).encode("utf-8", "surrogatepass"), safe="")
    if choice == "bytes":
        return quote_from_bytes(draw(raw_bytes) or b"%", safe="")
    return quote_from_bytes(draw(st.text(min_size=1, max_size=40)).encode("utf-8", "surrogatepass"), safe="")


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | st.text(max_size=8),
                                    cursor_values | nasty_text | edge_instants | st.builds(str, huge_ints)),
                                   max_size=4))
    text = "&".join(quote_from_bytes(k.encode("utf-8", "surrogatepass")) + "="
                    + quote_from_bytes(v.encode("utf-8", "surrogatepass")) for k, v in pairs)
    return text + draw(st.sampled_from(["", "&%", "&%zz=1", "&=", "&a=%00", "&a=%ff%fe", "&&&"]))


# A header value cannot carry a line break on the wire: the test client refuses one as HTTP servers do.
header_text = st.text(max_size=80).map(lambda s: s.encode("latin-1", "replace").decode("latin-1")
                                       .replace("\r", "").replace("\n", ""))
# Odd header values of every class: huge numbers, NUL, non-ASCII (latin-1 on the wire), thousands of characters.
odd_header = (st.sampled_from(["9" * 400, "-" + "9" * 5000, "1e400", "\x00", "a\x00b", "é" * 50, "ÿþ", "x" * 8000,
                               ",,,", "=", "t=, v1=", ""])
              | header_text)


@st.composite
def signature_headers(draw: st.DrawFn) -> str:
    """``WorkOS-Signature`` values: the real shape with an absurd timestamp or hash, or anything at all."""
    stamp = draw(st.sampled_from(["9" * 400, "0", "-1", "1" * 5000, "1e9", "\x00", "é", ""])
                 | st.builds(str, huge_ints))
    digest = draw(st.sampled_from(["0" * 64, "", "é" * 64, "\x00", "z" * 5000]))
    return draw(st.sampled_from([f"t={stamp}, v1={digest}", f"t={stamp},v1={digest}", f"v1={digest}, t={stamp}"])
                | odd_header)


headers_extra = st.fixed_dictionaries({}, optional={
    "WorkOS-Signature": signature_headers(),
    "X-Forwarded-For": odd_header | st.sampled_from(["1.2.3.4, " * 2000, "::1", "300.1.1.1", "unknown"]),
    "X-Forwarded-Proto": odd_header | st.sampled_from(["https", "http, https", "gopher"]),
    "X-Forwarded-Host": odd_header | st.sampled_from(["evil.test", "a:b:c", "[::1]:99999"]),
    "X-Forwarded-Port": odd_header | st.sampled_from(["443", "99999999999999999999", "-1"]),
    "X-Forwarded-Prefix": odd_header | st.sampled_from(["/x", "//evil.test"]),
    "Accept": st.sampled_from(["text/html", "application/json", "*/*", "text/html;q=0.1, application/json",
                               "\x00", "x" * 3000]),
    "X-Request-ID": header_text,
    "User-Agent": st.sampled_from(["x" * 10_000, "ua\x00", "Mozilla/5.0", ""]),
    "X-CSRFToken": header_text,
    "Content-Encoding": st.sampled_from(["gzip", "identity", "x"]),
    "Cookie": st.sampled_from(["hatidata_session=\x00", "hatidata_session=" + "a" * 5000,
                               "hatidata_session=Fe26.2**x", "session=x", "hatidata_session=" + "9" * 400,
                               "hatidata_session=é", "=" * 3000]) | odd_header,
    "Authorization": st.sampled_from(["Bearer ", "Bearer hd_live_\x00", "Bearer hd_live_" + "a" * 5000,
                                      "Bearer a.b.c", "Basic xyz", "Bearer " + "\x00" * 3, "Bearer " + "9" * 400,
                                      "Bearer hd_live_é", "Basic " + "=" * 3000]) | odd_header,
})


# --- the callers ---------------------------------------------------------------------------------------------

class Caller:
    """One way of calling the app; ``prepare`` (re)authenticates when a fuzzed request signed it out."""

    def __init__(self, client: FlaskClient, prepare: Callable[[], dict[str, str]]) -> None:
        self.client = client
        self._prepare = prepare
        self.headers = prepare()

    def refresh(self) -> None:
        if self.headers.get("X-CSRFToken") and self.client.get("/api/v1/me").status_code != 200:
            self.headers = self._prepare()


def _caller(app: Flask, kind: str, tenant: Tenant) -> Caller:
    client = app.test_client()
    if kind == "api_key":
        return Caller(client, lambda: headers_for(tenant, "admin"))
    if kind == "cookie":
        def sign_in() -> dict[str, str]:
            assert login(client, "admin@acme.test").status_code == 302
            db.session.remove()
            return csrf_headers(client)

        return Caller(client, sign_in)
    return Caller(client, dict)


def _routes(app: Flask) -> list[tuple[Rule, str]]:
    return sorted(((rule, method) for rule in app.url_map.iter_rules() for method in sorted(rule.methods or ())),
                  key=lambda item: (item[0].rule, item[1]))


def _build_path(rule: Rule, params: dict[str, str]) -> str:
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", lambda m: params[m.group(1)], rule.rule)


# One example per class of bad input, sent to every route on top of the random ones (values of our own,
# not the issue's): deep nesting, a lone surrogate, a NUL, cursors beyond 64 bits, odd path segments.
SEEDS: tuple[tuple[str, str, bytes, str], ...] = (
    ("%00q", "cursor=" + _cursor(2**64), b'{"a":' * 5_000 + b"0" + b"}" * 5_000, "application/json"),
    ("x" * 3_000, "cursor=" + _cursor(-(10**30)), b'{"name": "\\udc01", "role": "admin"}', "application/json"),
    ("k%ed%a0%80", "cursor=" + _cursor(True) + "&limit=5",
     b'{"group_identifier": "q\\u0000", "priority": 100000000000000000000000}', "application/json"),
    ("z", "action=%00&cursor=" + _cursor("\udbff"), b"[" * 2_000 + b"]" * 2_000, "application/merge-patch+json"),
    ("%ff", "cursor=" + _cursor(10**20), b"\xff\xfe{}", "application/json"),
    ("e", "since=0001-01-01T00:00:00%2B13:00&until=9999-12-31T23:59:59-13:00",
     b'{"expires_at": "9999-12-31T23:59:59-13:30", "name": "n", "scopes": ["data:read"]}', "application/json"),
    # Bodies that are not UTF-8 (an encoded surrogate; UTF-16 with a NUL): Flask's get_json would decode them.
    ("y", "", b'{"organization_id": "o\xed\xa0\x80", "name": "\xed\xb0\x81"}', "application/json"),
    ("w", "", '{"organization_id": "o\x00", "name": "n\x00", "role": "admin"}'.encode("utf-16"),
     "application/json"),
)
# Odd headers sent with the seeds (credentials stay the caller's): every route meets each of them.
SEED_HEADERS: tuple[dict[str, str], ...] = (
    {"WorkOS-Signature": f"t={'7' * 350}, v1={'a' * 64}", "X-Forwarded-For": "8" * 400},
    {"WorkOS-Signature": "t=\x00, v1=\x00", "X-Forwarded-Proto": "ÿ" * 3000, "X-Forwarded-Host": "h\x00"},
    {"WorkOS-Signature": "t=1, v1=" + "é" * 64, "X-Forwarded-Port": "9" * 300, "X-Forwarded-Prefix": "\x00/"},
    {"WorkOS-Signature": "x" * 9000, "X-Forwarded-For": "1.1.1.1, \x00, ::, " * 300},
    {"WorkOS-Signature": "t=-" + "1" * 5000 + ", v1=", "X-Request-ID": "é\x00" * 2000},
    {"WorkOS-Signature": f"t={10**30}, v1={'0' * 64}", "X-Forwarded-Host": "[::1]:99999999999"},
    {"WorkOS-Signature": "t=0, v1=", "X-Forwarded-For": "::ffff:1.2.3.4"},
    {"X-Request-ID": "r" * 64},
)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A body and its content type: mostly JSON sent as JSON, else anything under any type."""
    if draw(st.integers(0, 3)):
        return draw(st.one_of(deep_json(), bodies)), draw(json_types)
    return draw(bodies), draw(content_types)


def _fuzz_route(app: Flask, caller: Caller, rule: Rule, method: str, known: list[str]) -> list[int]:
    statuses: list[int] = []

    @given(params=st.fixed_dictionaries({name: path_values(known) for name in sorted(rule.arguments)}),
           query=query_strings(), payload=payloads(), extra=headers_extra)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(params: dict[str, str], query: str, payload: tuple[bytes, str | None], extra: dict[str, str]) -> None:
        body, content_type = payload
        caller.refresh()
        headers = {**caller.headers, **extra}
        url = _build_path(rule, params) + ("?" + query if query else "")
        try:
            response = caller.client.open(url, method=method, data=body, content_type=content_type,
                                          headers=headers)
            text = response.get_data()  # a streamed body runs its generator here
        finally:
            db.session.remove()  # each request of a real server starts with a fresh session
        statuses.append(response.status_code)
        assert response.status_code < 500, (method, url[:200], body[:200], response.status_code, text[:300])
        assert b"Traceback (most recent call last)" not in text

    for (segment, query, body, content_type), extra in zip(SEEDS, SEED_HEADERS, strict=True):
        run = example(params={name: segment for name in rule.arguments}, query=query,
                      payload=(body, content_type), extra=extra)(run)
    run()
    return statuses


def _describe(exc: BaseException) -> str:
    """Each failure with its falsifying example (hypothesis adds it as a note)."""
    parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    lines = []
    for part in parts:
        frames = traceback.extract_tb(part.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        lines.append(f"{type(part).__name__}{where}: {str(part)[:600]}")
        lines += [note[:600] for note in getattr(part, "__notes__", [])]
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CALLERS)
def test_every_route_answers_bad_input_below_500(app: Flask, kind: str) -> None:
    sync_organizations(app)
    tenant = make_tenant(app, "Quokka")
    known = [value for value in tenant.ids.values()] + ["okta", "azure", "attributes", "metadata"]
    caller = _caller(app, kind, tenant)
    routes = _routes(app)
    assert len(routes) >= 60, routes
    failures: list[str] = []
    started = time.monotonic()
    statuses: list[int] = []
    for rule, method in routes:
        try:
            statuses += _fuzz_route(app, caller, rule, method, known)
        except Exception as exc:  # noqa: BLE001 - report every route's failure at once
            failures.append(f"{method} {rule.rule}: {_describe(exc)}")
    elapsed = time.monotonic() - started
    print(f"\nfuzz[{kind}]: {len(routes)} routes x {EXAMPLES} examples, {len(statuses)} requests, {elapsed:.1f}s")
    assert not failures, "\n\n".join(failures)
    assert len(statuses) >= len(routes) * len(SEEDS)
    if kind != "anonymous":  # the caller got through authentication somewhere, not only 401s
        assert sum(200 <= status < 300 for status in statuses) >= 10


# --- the shared mechanisms, as properties ------------------------------------------------------------------

def _outcome(call: Callable[[], Any]) -> Any:
    """The result of *call*, or the :class:`AppError` it raised."""
    from hatidata_auth.errors import AppError

    try:
        return call()
    except AppError as exc:
        return exc


@given(value=json_values | huge_ints, kind=st.sampled_from([None, int, str]))
@settings(max_examples=300, deadline=None, database=None)
def test_a_cursor_decodes_to_a_storable_key_of_its_type_or_is_a_422(value: Any, kind: Any) -> None:
    from hatidata_auth.api.common import decode_cursor
    from hatidata_auth.errors import AppError
    from hatidata_auth.inputs import INT64_MAX, INT64_MIN, unstorable

    key = _outcome(lambda: decode_cursor(_cursor(value), kind))
    if isinstance(key, AppError):
        assert (key.status, key.details["fields"]) == (422, {"cursor": ["Not a valid cursor."]})
        return
    assert key == value
    assert isinstance(key, kind or (int, str))
    assert not isinstance(key, bool)
    if isinstance(key, int):
        assert INT64_MIN <= key <= INT64_MAX
    else:
        assert len(key) <= 255
        assert not unstorable(key)


@given(data=bodies | deep_json() | st.binary())
@settings(max_examples=300, deadline=None, database=None)
def test_any_body_parses_to_bounded_json_or_is_refused(data: bytes) -> None:
    from hatidata_auth.errors import AppError
    from hatidata_auth.inputs import (
        MAX_JSON_DEPTH,
        NUL_MESSAGE,
        SURROGATE_MESSAGE,
        _depth_exceeds,
        bad_json_fields,
        load_json,
    )

    value = _outcome(lambda: load_json(data))
    if isinstance(value, AppError):
        assert (value.status, value.code) == (400, "invalid_json")
        return
    assert not _depth_exceeds(value, MAX_JSON_DEPTH)
    messages = [m for problems in bad_json_fields(value).values() for m in problems]
    assert ("\\u0000" in json.dumps(value)) == (NUL_MESSAGE in messages)
    text = json.dumps(value, ensure_ascii=False)
    if SURROGATE_MESSAGE in messages:
        with pytest.raises(UnicodeEncodeError):
            text.encode("utf-8")
    else:
        text.encode("utf-8")  # storable as UTF-8 text
