"""Fan-out benchmark (not a timed test): ``.venv/bin/python -m bench.dsync_bench --fanout N`` (or
``python -m bench.fanout --members N``).

A directory group of N members (seeded set-based straight into the database of a private PostgreSQL database,
mapped "Bench Fan" -> admin, "Bench Fan Renamed" -> developer) is renamed by one signed ``dsync.group.updated``
webhook to the app under gunicorn (``config/gunicorn.conf.py``, 2 workers, their applier threads,
``HATIDATA_FANOUT_CHUNK`` as set, default 500). Measured in the same run:

- *baseline*: the acknowledgement time of signed single-user webhooks (``dsync.user.updated``; median of 20);
- the rename's acknowledgement time (target < 100 ms) and its ratio to the baseline;
- the time from the rename's arrival until every member holds the role the mappings give (polled every 100 ms;
  target < 30 s), and the longest applier transaction it took (the slowest job's apply time is not visible from
  outside; the number of jobs and the mean time per chunk are printed instead);
- ``--compare-inline``: the same rename back with ``HATIDATA_FANOUT_CHUNK`` above N (one transaction, the
  behaviour before the fan-out), its time to correct roles, and the ratio chunked / one transaction.

Options: ``--members`` (2000), ``--chunk`` (the setting's default), ``--compare-inline``.
Environment: ``BENCH_DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
``BENCH_REDIS_URL`` (optional).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench.dsync_bench import (
    ACME_DIR,
    ACME_ORG,
    SECRET,
    app_config,
    bench_engine,
    private_database,
    seconds_until_drained,
    server_env,
    start_server,
    stop_server,
    user_payload,
)
from tests.support.dsync import sign
from workos_emulator.testing import EmulatorServer

GROUP = "directory_group_BENCHFAN"
_stamp = iter(range(1, 10**9))


def _time() -> str:
    return (datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_stamp))).isoformat().replace("+00:00", "Z")


def rename_payload(name: str) -> dict[str, Any]:
    """A ``dsync.group.updated`` event renaming the bench group to *name*."""
    at = _time()
    return {"object": "event", "id": f"event_FANBENCH{next(_stamp):08d}", "event": "dsync.group.updated",
            "created_at": at,
            "data": {"object": "directory_group", "id": GROUP, "idp_id": "benchfan", "directory_id": ACME_DIR,
                     "organization_id": ACME_ORG, "name": name, "created_at": "2030-01-01T00:00:00.000Z",
                     "updated_at": at, "raw_attributes": {}}}


def post(port: int, payload: dict[str, Any]) -> float:
    """POST one signed webhook; returns seconds until its answer (which must be 200)."""
    body = json.dumps(payload, separators=(",", ":"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("POST", "/webhooks/workos", body=body,
                 headers={"Content-Type": "application/json", "WorkOS-Signature": sign(SECRET, body)})
    response = conn.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"webhook answered {response.status}: {answer[:200]!r}")
    return elapsed


def seed(members: int) -> str:
    """The bench group and its *members* directory-managed members of Acme (roles as the mappings give: admin);
    returns Acme's organization id. Runs in the app context of :func:`main`."""
    from sqlalchemy import insert

    from hatidata_auth.extensions import db
    from hatidata_auth.models import (
        DirectoryGroup,
        DirectoryGroupMembership,
        DirectoryUser,
        Membership,
        Organization,
        RoleMapping,
        User,
        new_id,
    )

    session = db.session()
    org_id = str(session.query(Organization.id).filter_by(workos_organization_id=ACME_ORG).scalar())
    at = datetime(2030, 1, 1, tzinfo=UTC)
    session.add(DirectoryGroup(organization_id=org_id, workos_id=GROUP, directory_id=ACME_DIR, idp_id="benchfan",
                               name="Bench Fan", version_at=at))
    for name, role in (("Bench Fan", "admin"), ("Bench Fan Renamed", "developer")):
        session.add(RoleMapping(organization_id=org_id, identifier_kind="name", group_identifier=name, role=role))
    for start in range(0, members, 2000):
        users, dus, mems, dgms = [], [], [], []
        for n in range(start, min(start + 2000, members)):
            user_id, du_id, email = new_id("usr"), f"directory_user_BENCHFAN{n:07d}", f"fan{n}@acme.test"
            users.append({"id": user_id, "email": email})
            dus.append({"id": new_id("du"), "organization_id": org_id, "workos_id": du_id, "directory_id": ACME_DIR,
                        "email": email, "state": "active", "attributes": {}, "user_id": user_id, "version_at": at})
            mems.append({"id": new_id("mem"), "organization_id": org_id, "user_id": user_id, "role": "admin",
                         "role_source": "mapping", "source": "directory", "status": "active",
                         "directory_user_id": du_id, "details": {}})
            dgms.append({"organization_id": org_id, "group_workos_id": GROUP, "user_workos_id": du_id,
                         "present": True, "version_at": at})
        for model, rows in ((User, users), (DirectoryUser, dus), (Membership, mems),
                            (DirectoryGroupMembership, dgms)):
            session.execute(insert(model.__table__), rows)
    session.commit()
    session.execute(text("ANALYZE"))
    session.commit()
    return org_id


def seconds_until_roles(engine: Engine, organization_id: str, role: str, since: float,
                        timeout: float = 900.0) -> float:
    """Seconds from *since* until every bench member holds *role* (polled every 100 ms)."""
    query = text("SELECT 1 FROM memberships WHERE organization_id = :org AND directory_user_id LIKE "
                 "'directory_user_BENCHFAN%' AND (role <> :role OR status <> 'active') LIMIT 1")
    deadline = time.perf_counter() + timeout
    with engine.connect() as conn:
        while time.perf_counter() < deadline:
            if conn.execute(query, {"org": organization_id, "role": role}).first() is None:
                return time.perf_counter() - since
            conn.rollback()
            time.sleep(0.1)
    raise RuntimeError(f"roles not all {role} within {timeout:.0f} s")


def jobs_done(engine: Engine) -> tuple[int, float]:
    """How many recompute jobs were applied, and the mean seconds from one job's arrival to its applied time."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT count(*), avg(extract(epoch FROM applied_at - received_at)) FROM webhook_events "
            "WHERE source = 'internal' AND status = 'applied'")).one()
    return int(row[0]), float(row[1] or 0.0)


def rename_round(env: dict[str, str], engine: Engine, organization_id: str, name: str, role: str,
                 ) -> tuple[float, float]:
    """Serve the app with *env*, rename the group to *name*; returns (acknowledgement s, until *role* is every
    member's s)."""
    server = start_server("wsgi:app", env)
    try:
        port = int(env["PORT"])
        for v in range(1, 9):  # warm both workers (first request: connections, applier threads) first
            post(port, user_payload(980_000 + v, 0))
        seconds_until_drained(engine, time.perf_counter())
        started = time.perf_counter()
        ack = post(port, rename_payload(name))
        correct = seconds_until_roles(engine, organization_id, role, started)
        seconds_until_drained(engine, time.perf_counter())
    finally:
        stop_server(server)
    return ack, correct


def run(members: int, chunk: int | None = None, compare_inline: bool = False) -> None:
    """The benchmark (see the module docstring)."""
    from flask_migrate import upgrade

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor
    from hatidata_auth.config import DEFAULTS
    from hatidata_auth.extensions import db
    from hatidata_auth.services.organizations import sync_from_workos

    chunk = chunk or int(DEFAULTS["HATIDATA_FANOUT_CHUNK"])
    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with tempfile.TemporaryDirectory() as tmp, private_database(base) as database_url, \
            EmulatorServer(data_dir=tmp) as emulator:
        instance = Path(tmp) / "instance"
        os.environ["HATIDATA_INSTANCE_PATH"] = str(instance)
        app = create_app(app_config(database_url, emulator.url))
        with app.app_context():
            upgrade()
            sync_from_workos(db.session(), app.extensions["hatidata_workos"].client, Actor.system("bench"))
            db.session.commit()
            organization_id = seed(members)
        engine = bench_engine(database_url)
        env = {**server_env(database_url, emulator.url, instance), "HATIDATA_FANOUT_CHUNK": str(chunk)}
        server = start_server("wsgi:app", env)
        try:  # baseline: single-user webhooks, the same server settings
            port = int(env["PORT"])
            post(port, user_payload(990_000, 0))
            seconds_until_drained(engine, time.perf_counter())
            singles = sorted(post(port, user_payload(990_000, v)) for v in range(1, 21))
            seconds_until_drained(engine, time.perf_counter())
        finally:
            stop_server(server)
        single = singles[len(singles) // 2]
        print(f"[baseline] signed single-user webhook acknowledged in {single * 1000:.1f} ms (median of 20)")
        ack, correct = rename_round(env, engine, organization_id, "Bench Fan Renamed", "developer")
        jobs, per_job = jobs_done(engine)
        print(f"[fan-out] rename of a {members}-member group, chunk {chunk}: acknowledged in {ack * 1000:.1f} ms "
              f"({ack / single:.2f} x the single-user webhook; target < 100 ms), every role correct after "
              f"{correct:.2f} s (target < 30 s); {jobs} recompute job(s), {per_job * 1000:.0f} ms each from "
              f"queued to applied on average")
        if compare_inline:
            inline_env = {**env, "HATIDATA_FANOUT_CHUNK": str(members + 1), "PORT": env["PORT"]}
            ack_one, correct_one = rename_round(inline_env, engine, organization_id, "Bench Fan", "admin")
            print(f"[one transaction] the same rename with HATIDATA_FANOUT_CHUNK={members + 1}: acknowledged in "
                  f"{ack_one * 1000:.1f} ms, every role correct after {correct_one:.2f} s; chunked / one "
                  f"transaction = {correct / correct_one:.2f}")
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--compare-inline", action="store_true")
    args = parser.parse_args()
    run(args.members, args.chunk, args.compare_inline)


if __name__ == "__main__":
    main()
