"""An applier's batch recomputes at most one chunk of members in all (``services/events/member_fanout.py``'s rule as
a transaction bound): however many events a batch holds, each under one chunk, their fan-outs share one
``fanout_jobs.MemberBudget``; one that no longer fits is queued as a recompute job, a job claimed after them
recomputes what is left. Checked as a property over batch compositions: group renames of groups of every size up to
a chunk (the same group renamed again, whose events keep their order), a pending recompute job, any batch size.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryGroup, DirectoryGroupMembership, WebhookEvent
from hatidata_auth.services import inbox_worker, role_mapping
from hatidata_auth.services.events import member_fanout
from tests.api_support import Tenant
from tests.support.dsync import drain_inbox
from tests.test_fanout import (  # noqa: F401 - app_config and fanco are fixtures
    CHUNK,
    DIRECTORY,
    WORKOS_ORG,
    _ack,
    _batch,
    _consistent,
    _event,
    _group,
    _time,
    app_config,
    fanco,
)

SMALL = range(1, CHUNK + 1)  # "Small k" has the first k members: every size up to one chunk
_names = itertools.count(1)


def _waiting(app: Flask) -> list[Any]:
    with app.app_context():
        rows = db.session.execute(select(WebhookEvent.event_id, WebhookEvent.status).where(
            WebhookEvent.status.in_(("received", "failed")),
            WebhookEvent.event_id != "event_fanco_failed")).all()  # the fixture's own failed event aside
        db.session.remove()
    return list(rows)


def _settle(app: Flask, organization_id: str) -> None:
    """Undo what a failed example leaves to the next one's whole-inbox and whole-organization checks: its pending
    events and jobs forgotten, every member's role recomputed."""
    event_ids = [event_id for event_id, _ in _waiting(app)]
    with app.app_context():
        db.session.execute(delete(WebhookEvent).where(WebhookEvent.event_id.in_(event_ids)))
        role_mapping.recompute_organization(db.session, app.extensions["hatidata_workos"].client,
                                            organization_id=organization_id, cause=Cause.system("test"))
        db.session.commit()
        db.session.remove()


def _small_id(k: int) -> str:
    return f"directory_group_small_{k}"


def _small(k: int, name: str) -> dict[str, Any]:
    return {"object": "directory_group", "id": _small_id(k), "idp_id": f"small{k}", "directory_id": DIRECTORY,
            "organization_id": WORKOS_ORG, "name": name, "created_at": "2031-01-01T00:00:00.000Z",
            "updated_at": _time(), "raw_attributes": {}}


@pytest.fixture
def smallco(app: Flask, fanco: Tenant) -> Tenant:  # noqa: F811
    """Fanco with one more group per size from 1 to a chunk, on its first members."""
    with app.app_context():
        now = datetime(2031, 1, 1, tzinfo=UTC)
        for k in SMALL:
            db.session.add(DirectoryGroup(organization_id=fanco.id, workos_id=_small_id(k), directory_id=DIRECTORY,
                                          name=f"Small {k}", version_at=now))
            for i in range(k):
                db.session.add(DirectoryGroupMembership(organization_id=fanco.id, group_workos_id=_small_id(k),
                                                        user_workos_id=f"directory_user_fan_{i:03d}", present=True,
                                                        version_at=now))
        db.session.commit()
        db.session.remove()
    return fanco


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(renamed=st.lists(st.sampled_from(list(SMALL)), max_size=12), job_pending=st.booleans(),
       limit=st.integers(min_value=1, max_value=inbox_worker.DEFAULT_BATCH))
def test_a_batch_recomputes_at_most_one_chunk_of_members(renamed: list[int], job_pending: bool, limit: int,
                                                         app: Flask, client: FlaskClient, smallco: Tenant,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []  # members recomputed by each batch (transaction), in order
    sync, claim = member_fanout._sync, inbox_worker.claim

    def counting_claim(*args: Any, **kwargs: Any) -> Any:
        batches.append(0)  # a batch starts (one transaction)
        return claim(*args, **kwargs)

    def counting_sync(ctx: Any, org: Any, keys: list[str], reason: str) -> None:
        batches[-1] += len(keys)
        sync(ctx, org, keys, reason)

    try:
        monkeypatch.setattr(inbox_worker, "claim", counting_claim)
        monkeypatch.setattr(member_fanout, "_sync", counting_sync)
        if job_pending:  # a rename of the big group (more than a chunk): its first job waits in the inbox
            _ack(client, app, _event("dsync.group.updated", _group(f"Fan {next(_names)}")))
            _batch(app, limit=1)
        last: dict[int, str] = {}
        for k in renamed:
            last[k] = f"Small {k} v{next(_names)}"
            _ack(client, app, _event("dsync.group.updated", _small(k, last[k])))
        _batch(app, limit=limit)
        drain_inbox(app)
        monkeypatch.undo()

        assert max(batches) <= CHUNK, batches  # the property: no batch recomputed more than one chunk
        if renamed or job_pending:
            assert sum(batches) > 0  # the renames did recompute members
        with app.app_context():
            stored = dict(db.session.execute(select(DirectoryGroup.workos_id, DirectoryGroup.name).where(
                DirectoryGroup.organization_id == smallco.id)).all())
            db.session.remove()
        waiting = _waiting(app)
        assert not waiting, waiting  # everything applied (jobs deferred by a spent batch included)
    except BaseException:
        monkeypatch.undo()
        _settle(app, smallco.id)
        raise
    assert {_small_id(k): name for k, name in last.items()}.items() <= stored.items()  # per-group order kept
    _consistent(app, smallco.id)  # every member's role as a full recompute gives
