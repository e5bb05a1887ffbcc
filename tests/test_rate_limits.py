"""Flask-Limiter on login starts and failed API-key attempts: 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask


@pytest.fixture
def limited_app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Flask]:
    from hatidata_auth import create_app
    from hatidata_auth.extensions import db

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    app_config.update(HATIDATA_LOGIN_RATE_LIMIT="3 per minute", HATIDATA_API_KEY_FAILURE_RATE_LIMIT="2 per minute",
                      RATELIMIT_STORAGE_URI="memory://")
    application = create_app(app_config)
    yield application
    with application.app_context():
        db.session.remove()
    application.extensions["hatidata_workos"].close()


def test_login_starts_are_limited_per_address(limited_app: Flask) -> None:
    client = limited_app.test_client()
    for _ in range(3):
        assert client.get("/auth/login").status_code == 302
    response = client.get("/auth/login", headers={"Accept": "application/json"})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    other = limited_app.test_client()
    assert other.get("/auth/login", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 302


def test_failed_api_key_attempts_are_limited(limited_app: Flask) -> None:
    client = limited_app.test_client()
    bad = {"Authorization": "Bearer hd_live_" + "A" * 43}
    assert client.get("/api/v1/me", headers=bad).status_code == 401
    assert client.get("/api/v1/me", headers=bad).status_code == 401
    response = client.get("/api/v1/me", headers=bad)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["code"] == "too_many_requests"
    # other addresses are unaffected
    assert client.get("/api/v1/me", headers=bad, environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 401


def test_only_endpoints_without_any_limit_skip_the_limit_lookup(limited_app: Flask) -> None:
    """Every route: the per-endpoint shortcut skips Flask-Limiter exactly where it would find no limit."""
    from flask_limiter.util import get_qualified_name

    from hatidata_auth.extensions import endpoint_unlimited, limiter

    manager = limiter.limit_manager
    with limited_app.test_request_context():
        for rule in limited_app.url_map.iter_rules():
            blueprint = rule.endpoint.rpartition(".")[0] or None
            view = limited_app.view_functions[rule.endpoint]
            defaults, decorated = manager.resolve_limits(limited_app, rule.endpoint, blueprint,
                                                         get_qualified_name(view), in_middleware=False)
            assert endpoint_unlimited(limited_app, rule.endpoint, blueprint) == (not defaults and not decorated), \
                rule.endpoint
        login = next(r.endpoint for r in limited_app.url_map.iter_rules() if r.rule == "/auth/login")
        assert not endpoint_unlimited(limited_app, login, login.rpartition(".")[0])


def test_an_app_without_rate_limits_leaves_the_next_apps_limits_on(app_config: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Any) -> None:
    """Flask-Limiter's extension object is shared by every app of the process and keeps the last app's
    ``RATELIMIT_ENABLED`` as the default of the next: each app sets its own (``config.DEFAULTS``)."""
    from hatidata_auth import create_app

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    unlimited = create_app({**app_config, "RATELIMIT_ENABLED": False})
    unlimited.extensions["hatidata_workos"].close()
    application = create_app({**app_config, "HATIDATA_LOGIN_RATE_LIMIT": "1 per minute",
                              "RATELIMIT_STORAGE_URI": "memory://"})
    try:
        client = application.test_client()
        statuses = [client.get("/auth/login", headers={"Accept": "application/json"}).status_code for _ in range(2)]
        assert statuses == [302, 429]
    finally:
        application.extensions["hatidata_workos"].close()


def test_a_host_default_limit_still_applies_to_every_api_route(app_config: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from hatidata_auth import create_app

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    app_config.update(RATELIMIT_DEFAULT="2 per minute", RATELIMIT_STORAGE_URI="memory://")
    application = create_app(app_config)
    try:
        client = application.test_client()
        for path in ("/api/v1/me", "/api/openapi.json"):
            statuses = [client.get(path).status_code for _ in range(3)]
            assert statuses[-1] == 429, (path, statuses)
        # Ours that are never limited (extensions.never_rate_limited): the health checks and the WorkOS webhook.
        assert {client.get("/healthz").status_code for _ in range(4)} == {200}
        assert 429 not in {client.post("/webhooks/workos", data="{}").status_code for _ in range(4)}
    finally:
        from hatidata_auth.extensions import limiter

        # Flask-Limiter's extension object is process-wide and keeps the defaults of the last app that set some.
        limiter.limit_manager.set_default_limits([])
        application.extensions["hatidata_workos"].close()


def test_a_request_no_limit_applies_to_skips_the_limiters_check_unless_a_meta_limit_is_set(
        limited_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortcut of ``extensions._Limiter``: where the request filter answers "no limit", Flask-Limiter's own
    check (which would resolve and evaluate an empty list) is not run; a meta limit, which applies even there,
    keeps it."""
    from flask_limiter import Limiter

    from hatidata_auth.extensions import limiter

    checked: list[str] = []
    original = Limiter._check_request_limit

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        from flask import request

        checked.append(request.path)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Limiter, "_check_request_limit", spy)
    client = limited_app.test_client()
    client.get("/healthz")
    client.post("/webhooks/workos", data="{}")
    client.get("/auth/login")
    assert set(checked) == {"/auth/login"}  # its before_request hook and its decorated limit
    checked.clear()

    monkeypatch.setattr(Limiter, "_check_request_limit", lambda self, *args, **kwargs: checked.append("meta"))
    monkeypatch.setattr(limiter, "_meta_limits", [["a meta limit"]])
    with limited_app.test_request_context("/webhooks/workos", method="POST"):
        limiter._check_request_limit()
    assert checked == ["meta"]


@pytest.mark.parametrize("path", ["/webhooks/stripe", "/healthzone", "/readyz-report"])
def test_an_embedding_hosts_own_routes_keep_their_limits_whatever_their_paths(path: str,
                                                                               app_config: dict[str, Any]) -> None:
    """Only our own views are never limited (marked, not matched by path): a host's ``/webhooks/...`` or
    ``/healthz...`` route keeps its own limit and the host's default (found by a break-it review)."""
    from hatidata_auth.embedding import HatiDataAuth
    from hatidata_auth.extensions import limiter

    config = {k: v for k, v in app_config.items() if k != "HATIDATA_ENV"}
    config.update(TESTING=True, RATELIMIT_DEFAULT="2 per minute", RATELIMIT_STORAGE_URI="memory://")
    host = Flask("host")
    host.config.update(config)
    HatiDataAuth(host)

    @host.get(path)
    @limiter.limit("1 per minute")
    def own() -> str:
        return "ok"

    try:
        client = host.test_client()
        assert [client.get(path).status_code for _ in range(2)] == [200, 429]
    finally:
        limiter.limit_manager.set_default_limits([])
        host.extensions["hatidata_workos"].close()
