"""What an anonymous caller can make us keep or spend is bounded (break-it issue #10, finding 6).

* Every metric label comes from a fixed set: HTTP methods (the standard ones, else ``OTHER``), endpoints (URL
  rules, never the raw path), statuses (registered codes), WorkOS paths (WorkOS's own words, else ``{id}``) and
  webhook event types (the ones we apply, else ``other``), whatever methods, paths and ids a client invents.
* ``/readyz`` spends at most one WorkOS call per ``HATIDATA_READINESS_CACHE_SECONDS``, shared by workers.
"""

from __future__ import annotations

import ast
import contextlib
import math
import pathlib
import re
import time
from typing import Any
from urllib.parse import quote

import pytest
import workos
from flask import Flask
from flask.testing import FlaskClient
from flask_caching.backends import SimpleCache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workos._errors import WorkOSError

from hatidata_auth.health import OK, CachedCheck
from hatidata_auth.metrics import (
    HTTP_METHODS,
    MAX_PATH_SEGMENTS,
    WORKOS_PATH_WORDS,
    event_type_label,
    path_template,
)
from hatidata_auth.services.events import handled_event_types

SERIES = re.compile(r'^(hatidata_[a-z_]+?)(?:_total|_count|_bucket|_sum)?\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\}',
                    re.MULTILINE)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
STATUS_LABELS = {str(code) for code in range(100, 600)} | {"other"}


def _labels(client: FlaskClient) -> list[tuple[str, dict[str, str]]]:
    text = client.get("/metrics").get_data(as_text=True)
    return [(name, dict(LABEL.findall(body))) for name, body in SERIES.findall(text)]


def _bounded_path(path: str) -> bool:
    words = path.removeprefix("/").split("/") if path != "/" else []
    return len(words) <= MAX_PATH_SEGMENTS + 1 and set(words) <= WORKOS_PATH_WORDS | {"{id}", "…"}


tokens = st.from_regex(r"[A-Z]{3,20}", fullmatch=True) | st.sampled_from(sorted(HTTP_METHODS))
raw_paths = st.lists(st.text(st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=12),
                     max_size=5).map(lambda parts: "/" + "/".join(quote(p) for p in parts))


def test_every_request_metric_label_is_from_a_fixed_set(app: Flask, client: FlaskClient) -> None:
    rules = {rule.rule for rule in app.url_map.iter_rules()} | {"<unmatched>"}
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @given(method=tokens, path=raw_paths | st.sampled_from(sorted(rules - {"<unmatched>"})), org=st.text(max_size=30))
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def send(method: str, path: str, org: str) -> None:
        assert client.open(path, method=method).status_code < 500 or path != "/healthz"
        # An anonymous caller chooses the id that reaches WorkOS's URL here.
        client.get("/auth/login", query_string={"organization_id": org})
        # And any id our code may pass to WorkOS, through the real SDK and its instrumented backend.
        with contextlib.suppress(WorkOSError), app.app_context():
            app.extensions["hatidata_workos"].client.organizations.get_organization(org or "org_x")

    # The registry is process-wide: series other tests' apps (with their own routes) made before are not this
    # app's; every series this test's requests add is checked.
    before = {(name, tuple(sorted(labels.items()))) for name, labels in _labels(client)}
    send()
    series = _labels(client)
    http = [(name, labels) for name, labels in series if name.startswith("hatidata_http_request")]
    assert http, series[:5]
    for name, labels in http:
        assert labels["method"] in HTTP_METHODS | {"OTHER"}, labels
        if (name, tuple(sorted(labels.items()))) not in before:
            assert labels["endpoint"] in rules, labels
        assert labels.get("status", "200") in STATUS_LABELS, labels
    workos_calls = [labels for name, labels in series if name.startswith("hatidata_workos_")]
    assert any(labels["path"] == "/organizations/{id}" for labels in workos_calls), workos_calls[:5]
    for labels in workos_calls:
        assert labels["method"] in HTTP_METHODS | {"OTHER"}, labels
        assert _bounded_path(labels["path"]), labels
    webhook = [labels for name, labels in series if name == "hatidata_webhook_events"]
    for labels in webhook:
        assert labels["event_type"] in set(handled_event_types()) | {"other"}, labels


@given(url=st.builds(lambda base, path, query: base + path + query, st.sampled_from(["http://x", "https://a.b:9", ""]),
                     raw_paths | st.text(max_size=200), st.sampled_from(["", "?a=1", "?/x/y"])))
@settings(max_examples=300, deadline=None, database=None)
def test_a_workos_path_label_is_workos_words_and_ids(url: str) -> None:
    assert _bounded_path(path_template(url)), (url, path_template(url))


def _sdk_path_words() -> set[str]:
    """Every literal segment of a ``path=`` the installed SDK requests."""
    words: set[str] = set()
    for source in pathlib.Path(workos.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "path":
                parts = node.value.elts if isinstance(node.value, ast.Tuple | ast.List) else [node.value]
                texts = [p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)]
                texts += [v.value for p in parts if isinstance(p, ast.JoinedStr) for v in p.values
                          if isinstance(v, ast.Constant) and isinstance(v.value, str)]
                words |= {segment for text in texts for segment in text.split("/") if segment}
    return words


def test_every_workos_api_word_keeps_its_name_in_the_path_label() -> None:
    words = _sdk_path_words()
    assert len(words) > 50
    assert words <= WORKOS_PATH_WORDS, sorted(words - WORKOS_PATH_WORDS)
    assert path_template("https://api.workos.com/user_management/users/user_01ABC/sessions") \
        == "/user_management/users/{id}/sessions"


@given(event_type=st.text(max_size=80) | st.sampled_from(handled_event_types()))
@settings(max_examples=200, deadline=None, database=None)
def test_a_webhook_event_type_label_is_one_we_apply_or_other(event_type: str) -> None:
    label = event_type_label(event_type)
    assert label == (event_type if event_type in handled_event_types() else "other")


# --- readiness --------------------------------------------------------------------------------------------------

WORKOS_CALLS = re.compile(r'^hatidata_workos_request_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$', re.MULTILINE)


def _workos_calls(client: FlaskClient) -> float:
    return sum(float(v) for v in WORKOS_CALLS.findall(client.get("/metrics").get_data(as_text=True)))


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["HATIDATA_READINESS_CACHE_SECONDS"] = 1
    app_config["HATIDATA_LOGIN_RATE_LIMIT"] = "1000 per minute"  # every invented organization id reaches the view
    return app_config


def test_readiness_probes_spend_at_most_one_workos_call_per_interval(app: Flask, client: FlaskClient) -> None:
    before = _workos_calls(client)
    started = time.monotonic()
    answers = {client.get("/readyz").status_code for _ in range(60)}
    elapsed = time.monotonic() - started
    spent = _workos_calls(client) - before
    assert answers == {200}
    assert 1 <= spent <= math.ceil(elapsed / 1) + 1, (spent, elapsed)


class _Counted:
    def __init__(self, error: Exception | None = None) -> None:
        self.runs, self.error = 0, error

    def __call__(self) -> None:
        self.runs += 1
        if self.error is not None:
            raise self.error


@given(steps=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 3)), min_size=1, max_size=60),
       failing=st.booleans())
@settings(max_examples=200, deadline=None, database=None)
def test_workers_sharing_a_cache_run_the_check_once_per_interval(steps: list[tuple[int, float]],
                                                                 failing: bool) -> None:
    # Four workers (one check object each) and one shared cache; each worker's clock is the same fake one.
    shared, now, interval = SimpleCache(), [0.0], 5.0
    check = _Counted(ConnectionError("down") if failing else None)
    workers = [CachedCheck(check, interval=interval, key="readyz:test", clock=lambda: now[0],
                           errors=(ConnectionError,)) for _ in range(4)]
    for worker, advance in steps:
        now[0] += advance
        assert workers[worker].outcome(shared) == ("ConnectionError" if failing else OK)
    # Per process at most one run per interval of the fake clock; the shared entry (wall-clock expiry) makes the
    # other workers reuse it, so the whole pool runs it once here (the test takes far less than its expiry).
    assert check.runs == 1


class _DownCache:
    """A shared cache that is down (as Redis refusing connections): every call raises."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("cache down")

        return fail


@given(advances=st.lists(st.tuples(st.integers(0, 1), st.floats(0, 4)), min_size=1, max_size=60))
@settings(max_examples=200, deadline=None, database=None)
def test_without_the_shared_cache_each_worker_runs_the_check_at_most_once_per_interval(
        advances: list[tuple[int, float]]) -> None:
    now, interval = [0.0], 5.0
    check = _Counted()
    workers = [CachedCheck(check, interval=interval, key="readyz:down", clock=lambda: now[0]) for _ in range(2)]
    for worker, advance in advances:
        now[0] += advance
        assert workers[worker].outcome(_DownCache()) == OK
    assert 1 <= check.runs <= len(workers) * (math.floor(now[0] / interval) + 1), (check.runs, now[0])


def test_a_zero_interval_checks_every_time() -> None:
    check = _Counted()
    probe = CachedCheck(check, interval=0, key="readyz:zero")
    for _ in range(3):
        assert probe.outcome(SimpleCache()) == OK
    assert check.runs == 3
