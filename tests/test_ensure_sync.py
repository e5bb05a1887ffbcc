"""``HatiDataFlask.ensure_sync``: Flask's answer for every hook and view, asked of ``inspect`` once per function.

Flask calls ``ensure_sync`` for each before/after hook, teardown and view of every request; the app keeps whether a
function is a coroutine function instead of asking again (``hatidata_auth/app.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask import Flask

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
