"""Break-it review of the audit writes of a resync (issue #14): a transaction past 50 events is written by one
executemany INSERT, fewer by the per-event statement (PostgreSQL) or the ORM (SQLite). Whatever the sizes around
that line (49, 50, 51, ...), the organizations a transaction touches (the no-organization chain too), an explicit
flush before more events, and events discarded with a savepoint, every chain verifies whole, with exactly the
events kept."""

from __future__ import annotations

from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Organization
from hatidata_auth.services import audit

txn_strategy = st.lists(st.fixed_dictionaries({
    "org": st.integers(0, 2),  # 2: the chain of no organization
    "events": st.sampled_from([1, 2, 49, 50, 51, 52, 120]),
    "then": st.sampled_from(["commit", "flush_then_more", "savepoint_discard"]),
}), min_size=1, max_size=4)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(transactions=st.lists(txn_strategy, min_size=1, max_size=3))
def test_every_chain_verifies_whole_whatever_the_batch_sizes(app: Flask, transactions: list[list[dict[str, Any]]]
                                                             ) -> None:
    with app.app_context():
        session = db.session()
        orgs = [Organization(name=f"Chain {n}", domains=[f"chain{n}.test"]) for n in range(2)]
        session.add_all(orgs)
        session.commit()
        chains: list[str | None] = [orgs[0].id, orgs[1].id, None]
        before = {org: audit.count(session, org) if org else _no_org(session) for org in chains}
        kept = dict.fromkeys(chains, 0)
        for transaction in transactions:
            for part in transaction:
                org = chains[part["org"]]
                _record(session, org, part["events"])
                if part["then"] == "flush_then_more":
                    audit.flush_pending(session)
                    _record(session, org, 3)
                    kept[org] += part["events"] + 3
                elif part["then"] == "savepoint_discard":
                    mark = audit.pending_count(session)
                    savepoint = session.begin_nested()
                    _record(session, org, 60)
                    savepoint.rollback()
                    audit.discard_after(session, mark)
                    kept[org] += part["events"]
                else:
                    kept[org] += part["events"]
            session.commit()
        for org in chains:
            report = audit.verify_organization(session, org)
            assert report.ok, report
            assert report.complete, report
            total = audit.count(session, org) if org else _no_org(session)
            assert total - before[org] == kept[org], (org, total, before[org], kept[org])
            assert report.checked == total
        db.session.remove()


def _record(session: Any, organization_id: str | None, n: int) -> None:
    for i in range(n):
        audit.record(session, action="test.batch", cause=Cause.by(Actor.system("resync")),
                     organization_id=organization_id, details={"i": i})


def _no_org(session: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.organization_id.is_(None))))
