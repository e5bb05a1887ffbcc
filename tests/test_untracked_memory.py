"""What a process keeps per live session, the cyclic garbage collector does not walk, and a use does not renew.

The rule (``docs/auth.md``, "Memory the collector does not walk"): the records kept per session in memory for
every request (the session's status, the last-seen notes) are kept as plain tuples of strings, numbers and
``None``, which the collector stops tracking within their first two collections, as it does the cache entries
holding them; a verified token's claims keep lists as tuples, so a full collection untracks them; a use that notes
the session (last-seen due) slides the live status held, in its place only, and leaves the remembered identity's
entry as it is. Before, each full collection walked every session's records and each noted use put new tracked
objects into the oldest generation, so with 100,000 sessions a worker stopped for 2-3 s at a time
(``bench/auth.py``).
"""

from __future__ import annotations

import gc
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth.local_cache import LocalCache
from hatidata_auth.revocation_bus import RevocationBus
from hatidata_auth.services.credential_status import SessionStatus, status_to_dict
from hatidata_auth.services.introspection import Introspector
from hatidata_auth.services.last_seen import LastSeenWriter, Seen
from tests.auth_support import cookie_value, sync_organizations
from tests.test_identity_memo import ADDRESSES, _me, _signed_in

names = st.text(max_size=40)
seconds = st.floats(allow_nan=False, allow_infinity=False)
maybe_seconds = st.none() | seconds
statuses = st.builds(SessionStatus, names, names, names, names, names, st.none() | names, st.none() | names,
                     st.booleans(), seconds, st.booleans(), maybe_seconds, st.integers(0, 10**6),
                     st.none() | st.integers(0, 10**6), seconds, maybe_seconds)
notes = st.builds(Seen, names, names, seconds, maybe_seconds, st.booleans())


@settings(max_examples=25)  # two full collections each
@given(statuses, notes, seconds)
def test_a_status_a_note_and_their_cache_entries_are_untracked_after_a_collection(
        status: SessionStatus, note: Seen, at: float) -> None:
    cache: LocalCache[Any] = LocalCache(4)
    slid = status.seen(at)
    cache.set("status", tuple(slid), 1e12, renew=300.0, until=1e13)  # as the introspector keeps it
    cache.set("note", tuple(note), 1e12, tag=note.session_id)  # as the last-seen writer keeps it pending
    # A tuple is untracked by a collection that finds everything it holds untracked; the first one may come to an
    # entry before the record it holds: within two, then (a young gen0 collection, then the gen1 one that would
    # promote it to the oldest generation and count it towards the next full collection).
    gc.collect()
    gc.collect()
    for key, entry in dict(cache._data).items():
        assert not gc.is_tracked(entry), f"the collector still walks {key}'s entry"
        assert not gc.is_tracked(entry[1]), f"the collector still walks {key}"
    assert SessionStatus._make(cache.get("status")) == slid
    assert Seen._make(cache.get("note")) == note
    assert SessionStatus(**status_to_dict(slid)) == slid  # the shared cache's form holds the same status


def _ours(thing: object) -> bool:
    """Whether *thing* is an instance of one of the app's own classes."""
    return str(type(thing).__dict__.get("__module__", "")).startswith("hatidata_auth")


_WRITER = LastSeenWriter(lambda: None, interval=60, flush_every=3600)  # type: ignore[arg-type,return-value]
"""Notes only: one writer (and its idle flush thread) for every example; nothing is flushed."""


def _introspector(folder: str, now: float) -> Introspector:
    bus = RevocationBus(None, log_path=Path(folder) / "revocations")
    assert bus.local_enabled()
    _WRITER.clock = lambda: now
    return Introspector(bus=bus, shared_cache=None, cache_ttl=300, active_ttl=3600, last_seen=_WRITER,
                        clock=lambda: now)


HELD = ("absent", "inactive", "expired", "another organization", "another session row", "live")


@given(statuses, statuses, st.sampled_from(HELD), st.floats(1e9, 2e9), st.floats(1, 1e6))
def test_a_touch_slides_only_a_live_status_held_and_only_in_its_place(
        held: SessionStatus, touched: SessionStatus, state: str, now: float, left: float) -> None:
    """Whatever status the touch comes from (the memo's may be older than the one held), the one held is slid
    only while live and the same session row in the same organization: an evicted one stays gone, an ended,
    expired or switched one stays as it is."""
    held = held._replace(active=state != "inactive", loaded_at=now, cache_ttl=max(1, held.cache_ttl),
                         expires_at=now - left if state == "expired" else now + left)
    touched = touched._replace(session_id=held.session_id, workos_session_id=held.workos_session_id,
                               organization_id=held.organization_id, last_seen_at=None)
    if state == "another organization":
        touched = touched._replace(organization_id=held.organization_id + "_before")
    if state == "another session row":
        touched = touched._replace(session_id=held.session_id + "_before")
    with tempfile.TemporaryDirectory() as folder:
        introspector = _introspector(folder, now)
        if state != "absent":
            introspector._keep_session(held)
        assert introspector.touch(touched) == touched.seen(now)
        after = introspector.held_session(held.workos_session_id)
    assert after == (None if state == "absent" else held.seen(now) if state == "live" else held)


NOW = 1.8e9
LIVE = SessionStatus("ses_1", "session_1", "usr_1", "a@acme.test", "org_1", None, "admin", True, NOW + 600, False,
                     NOW - 120, 300, 3600, NOW, NOW - 1000)


@pytest.mark.parametrize(("meanwhile", "then"), [
    ([], None),
    ([LIVE._replace(active=False)], LIVE._replace(active=False)),  # a revocation, and the status read again
    ([LIVE._replace(organization_id="org_2")], LIVE._replace(organization_id="org_2")),  # a switch, read again
], ids=["evicted", "revoked and read again", "switched and read again"])
def test_what_happens_between_a_touchs_read_and_its_write_stays(
        meanwhile: list[SessionStatus], then: SessionStatus | None) -> None:
    """Another thread evicts the session (and reads it again) after the touch read the status held: the touch
    writes in place of what it read only, so the eviction stands."""
    with tempfile.TemporaryDirectory() as folder:
        introspector = _introspector(folder, NOW)
        introspector._keep_session(LIVE)
        read = introspector.held_session

        def held_session(workos_session_id: str) -> SessionStatus | None:
            found = read(workos_session_id)
            introspector.bus.evict("session", workos_session_id)
            for status in meanwhile:
                introspector._keep_session(status)
            return found

        with mock.patch.object(introspector, "held_session", held_session):
            introspector.touch(LIVE)
        assert introspector.held_session("session_1") == then


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    """Without Redis, the embedded default (the file cache and its revocation log: the bus is live)."""
    app_config["RATELIMIT_ENABLED"] = False
    if not app_config.get("REDIS_URL"):
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


def test_noted_uses_keep_the_memo_entries_and_leave_nothing_tracked_behind(
        app: Flask, client: FlaskClient, clock: list[float]) -> None:
    sync_organizations(app)
    rt = app.extensions["hatidata_auth"]
    rt.last_seen.flush_every = 3600  # the notes stay pending, to be looked at
    token, sid = _signed_in(app, client)
    cookie = cookie_value(client)
    keys = (rt.identities.key(b"b", token), rt.identities.key(b"c", cookie))
    assert _me(client, ADDRESSES[0], token)[0] == _me(client, ADDRESSES[0], cookie=cookie)[0] == 200
    remembered = [rt.identities.cache.get(key) for key in keys]
    assert None not in remembered
    gc.collect()
    ours_before = {id(o) for o in gc.get_objects() if _ours(o)}
    signed_in = time.time()
    for interval in range(1, 4):  # a use in each interval is due, by either credential first
        clock[0] = signed_in + interval * rt.last_seen.interval
        first, second = (token, None), (None, cookie)
        for bearer, sealed in (first, second) if interval % 2 else (second, first):
            assert _me(client, ADDRESSES[0], bearer, sealed)[0] == 200
        assert [rt.identities.cache.get(key) for key in keys] == remembered
        assert all(rt.identities.cache.get(k) is r for k, r in zip(keys, remembered, strict=True)), \
            "a noted use replaced a remembered identity"
        held = rt.introspector.held_session(sid)
        assert held is not None
        assert held.last_seen_at == clock[0], "the status kept was not slid by the use"
    with rt.last_seen._lock:
        pending = list(rt.last_seen._pending.values())
    del held  # the test's own view of the status
    gc.collect()
    gc.collect()  # within two collections (see above)
    assert not gc.is_tracked(rt.bus.sessions._data[sid])
    for entry in remembered:
        assert not gc.is_tracked(entry.status), "the memo's status is walked by the collector"
    claims = rt.verifier.cache._data[hashlib.sha256(token.encode()).digest()][1]
    assert any(type(value) is tuple for value in claims.values())  # the token has list claims (roles)
    # A dict leaves the walks at a full collection that finds it atomic (its entry, a tuple holding a dict, stays).
    assert not gc.is_tracked(claims), "the token's verified claims are walked by the collector"
    assert pending, "no use was noted"
    for note in pending:
        assert not gc.is_tracked(note), "a pending last-seen note is walked by the collector"
    new = [o for o in gc.get_objects() if _ours(o) and id(o) not in ours_before]
    assert new == [], f"uses left tracked objects behind: {[type(o).__qualname__ for o in new]}"
