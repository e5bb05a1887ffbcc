"""A page of the audit log costs a bounded part of the chain (``audit_queries.page``): a filter whose matches are
rare or absent stops at the page's budget with a cursor, and following the cursors yields exactly the matching
events, each once, newest first, whatever the budget, the window and the time range."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatidata_auth.causes import Actor, Cause, RequestInfo
from hatidata_auth.models import AuditEvent, Organization
from hatidata_auth.services import audit, audit_queries
from hatidata_auth.services.audit_queries import AuditFilter

T0 = datetime(2026, 3, 1, tzinfo=UTC)
EVENTS = 240
VALUES = {"actor_type": ("user", "api_key", "system"), "outcome": ("success", "failure"),
          "action": ("session.created", "api_key.created", "role.changed"), "target_id": ("t1", "t2", "t3", "t4")}


def _seed(db_session: Any) -> str:
    """Two organizations; the first one's chain has EVENTS events whose ``created_at`` is not in ``seq`` order
    (a late-committed event is recorded before events that committed ahead of it)."""
    rng = random.Random(17)
    acme, other = (Organization(name=n, domains=[f"{n.lower()}.test"]) for n in ("Acme", "Other"))
    db_session.add_all([acme, other])
    db_session.flush()
    for i in range(EVENTS):
        for org in (acme, other):
            actor_type = rng.choice(VALUES["actor_type"])
            audit.record(db_session, action=rng.choice(VALUES["action"]),
                         cause=Cause.by(Actor(actor_type, f"usr_{i % 5}", f"u{i % 5}@acme.test"),
                                        RequestInfo("10.0.0.1", "pytest", f"r{i}")),
                         organization_id=org.id, target_type="session", target_id=rng.choice(VALUES["target_id"]),
                         outcome=rng.choice(VALUES["outcome"]),
                         at=T0 + timedelta(minutes=i + rng.choice((0, 0, 0, -7, 5))))
        if i % 40 == 39:
            db_session.commit()
    db_session.commit()
    return acme.id


def _matches(event: AuditEvent, flt: AuditFilter) -> bool:
    for name in ("actor_type", "outcome", "action", "target_id"):
        wanted = getattr(flt, name)
        if wanted is not None and getattr(event, name) != wanted:
            return False
    return ((flt.since is None or event.created_at >= flt.since)
            and (flt.until is None or event.created_at < flt.until))


class SteppingClock:
    """A clock that moves by the next of *steps* (seconds) on each reading."""

    def __init__(self, steps: list[float]) -> None:
        self.now, self.steps, self.calls = 0.0, steps, 0

    def __call__(self) -> float:
        self.now += self.steps[self.calls % len(self.steps)] if self.steps else 0.0
        self.calls += 1
        return self.now


filters = st.builds(
    AuditFilter,
    actor_type=st.none() | st.sampled_from((*VALUES["actor_type"], "nobody")),
    outcome=st.none() | st.sampled_from(VALUES["outcome"]),
    action=st.none() | st.sampled_from(VALUES["action"]),
    target_id=st.none() | st.sampled_from(VALUES["target_id"]),
    since=st.none() | st.integers(-10, EVENTS + 10).map(lambda m: T0 + timedelta(minutes=m)),
    until=st.none() | st.integers(-10, EVENTS + 10).map(lambda m: T0 + timedelta(minutes=m)),
)


@pytest.fixture
def acme_chain(db_session: Any) -> tuple[Any, str, list[AuditEvent]]:
    org_id = _seed(db_session)
    chain = list(db_session.query(AuditEvent).filter(AuditEvent.organization_id == org_id)
                 .order_by(AuditEvent.seq.desc()))
    return db_session, org_id, chain


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=filters, limit=st.integers(1, 9), window=st.integers(1, 64), probe=st.integers(1, 400),
       steps=st.lists(st.sampled_from((0.0, 0.001, 0.03)), max_size=5))
def test_following_cursors_yields_exactly_the_matching_events(acme_chain: tuple[Any, str, list[AuditEvent]],
                                                             flt: AuditFilter, limit: int, window: int, probe: int,
                                                             steps: list[float],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    session, org_id, chain = acme_chain
    monkeypatch.setattr(audit_queries, "PAGE_WINDOW", window)
    monkeypatch.setattr(audit_queries, "TIME_RANGE_PROBE", probe)
    expected = [e.seq for e in chain if _matches(e, flt)]
    seen: list[int] = []
    before: int | None = None
    for _ in range(EVENTS + 2):
        rows, before = audit_queries.page(session, org_id, flt, before_seq=before, limit=limit,
                                          clock=SteppingClock(steps))
        assert len(rows) <= limit
        assert all(_matches(e, flt) and e.organization_id == org_id for e in rows)
        seen.extend(e.seq for e in rows)
        if before is None:
            break
    assert seen == expected


def test_a_page_with_no_match_stops_at_its_budget_with_a_cursor(acme_chain: tuple[Any, str, list[AuditEvent]],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    session, org_id, chain = acme_chain
    monkeypatch.setattr(audit_queries, "PAGE_WINDOW", 8)
    rows, before = audit_queries.page(session, org_id, AuditFilter(actor_type="nobody"), before_seq=None, limit=50,
                                      clock=SteppingClock([1.0]))
    # One window of 8 seqs was examined before the budget ran out: continue below it.
    assert rows == []
    assert before == chain[0].seq - 7
    rows, before = audit_queries.page(session, org_id, AuditFilter(actor_type="nobody"), before_seq=None, limit=50,
                                      clock=SteppingClock([]))
    assert rows == []
    assert before is None  # with time enough (a clock that stands still), the whole chain at once


def test_a_time_range_with_no_event_is_an_empty_last_page(acme_chain: tuple[Any, str, list[AuditEvent]]) -> None:
    session, org_id, _ = acme_chain
    empty = AuditFilter(since=T0 + timedelta(days=30))
    assert audit_queries.page(session, org_id, empty, before_seq=None, limit=10) == ([], None)
