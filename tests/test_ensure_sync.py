"""``HatiDataFlask.ensure_sync``: Flask's answer for every hook and view, asked of ``inspect`` once per function.

Flask calls ``ensure_sync`` for each before/after hook, teardown and view of every request; the app keeps whether a
function is a coroutine function instead of asking again (``hatidata_auth/app.py``), by weak reference, so that a
callable made per request is neither kept alive nor crowds out the app's own. Also here: the credential is read
through the request class, which a host app may extend (found by the review of that change)."""

from __future__ import annotations

import gc
from collections import Counter
from typing import Any

import pytest
from flask import Flask, Request, after_this_request
from flask.views import MethodView
from werkzeug.datastructures import EnvironHeaders

from hatidata_auth import app as app_module
from hatidata_auth.app import HatiDataFlask


async def _coroutine_view() -> str:
    return "never awaited here"


def _plain_view() -> str:
    return "ok"


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> str:
        return "called"


def test_every_request_asks_inspect_nothing_after_the_first(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: Counter[Any] = Counter()
    real = app_module.iscoroutinefunction

    def counting(func: Any) -> bool:
        asked[func] += 1
        return real(func)

    monkeypatch.setattr(app_module, "iscoroutinefunction", counting)
    client = app.test_client()
    for path in ("/healthz", "/api/v1/me", "/no-such-page"):
        first = client.get(path, headers={"X-Request-ID": "req-ensure-sync"})
        asked_first = sum(asked.values())
        second = client.get(path, headers={"X-Request-ID": "req-ensure-sync"})
        assert (second.status_code, second.get_data()) == (first.status_code, first.get_data()), path
        assert sum(asked.values()) == asked_first, path  # the second request asked nothing new
    assert asked
    assert max(asked.values()) == 1  # each hook, handler and view asked about once


@pytest.mark.parametrize("func", [_plain_view, _coroutine_view, _Unhashable(), str.upper])
def test_the_answer_is_flasks_for_every_kind_of_callable(func: Any) -> None:
    ours, theirs = HatiDataFlask(__name__), Flask(__name__)

    def outcome(flask_app: Flask) -> Any:
        try:
            return flask_app.ensure_sync(func)
        except RuntimeError as exc:  # a coroutine function without Flask's async extra installed
            return ("refused", str(exc))

    for _ in range(2):  # the kept answer as the first
        assert outcome(ours) == outcome(theirs)


def test_it_keeps_at_most_its_bound() -> None:
    flask_app = HatiDataFlask(__name__)
    flask_app.SYNC_CHECKED_MAX = 5
    funcs = [(lambda n=n: n) for n in range(20)]
    for func in funcs:
        assert flask_app.ensure_sync(func) is func
    assert len(flask_app._sync_checked) == 5
    assert all(flask_app.ensure_sync(func)() == n for n, func in enumerate(funcs))


class _PerRequestView(MethodView):
    init_every_request = True  # Flask's default: a new instance, and so new bound methods, per request

    def __init__(self) -> None:
        self.secret = "Bearer per-request-" + str(id(self))

    def get(self) -> str:
        @after_this_request
        def closing(response: Any) -> Any:  # a new closure per request, holding the view
            response.headers["X-Seen"] = self.secret[:6]
            return response

        return "ok"


def test_callables_made_per_request_are_neither_kept_alive_nor_crowd_out_the_app_s_own() -> None:
    flask_app = HatiDataFlask(__name__)
    flask_app.SYNC_CHECKED_MAX = 64
    flask_app.add_url_rule("/view", view_func=_PerRequestView.as_view("view"))

    @flask_app.get("/plain")
    def plain() -> str:
        return "plain"

    client = flask_app.test_client()
    for _ in range(300):
        assert client.get("/view").headers["X-Seen"] == "Bearer"
    gc.collect()
    assert not [obj for obj in gc.get_objects() if isinstance(obj, _PerRequestView)]  # nothing kept alive
    assert len(flask_app._sync_checked) < 64
    assert client.get("/plain").get_data() == b"plain"
    assert plain in flask_app._sync_checked  # a function registered later is still kept


def test_a_host_apps_request_class_supplies_the_credential(app: Flask) -> None:
    """``_resolve`` reads the credential through the request class, as a host app may extend it."""

    class GatewayRequest(Request):
        def __init__(self, environ: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            super().__init__(environ, *args, **kwargs)
            forwarded = environ.get("HTTP_X_FORWARDED_AUTHORIZATION")
            if forwarded:  # a gateway's header, seen as Authorization
                self.headers = EnvironHeaders({**environ, "HTTP_AUTHORIZATION": forwarded})

    app.request_class = GatewayRequest
    answer = app.test_client().get("/api/v1/me", headers={"X-Forwarded-Authorization": "Bearer not-a-token"})
    assert answer.status_code == 401
    assert answer.get_json()["error"]["details"]["reason"] != "missing"  # the forwarded credential was read
