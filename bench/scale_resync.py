"""The ``resync`` curve of ``bench/scale.py`` (not a timed test): ``.venv/bin/python -m bench.scale --curve resync``.

How the full resync's cost grows with the directory. Options (of ``bench/scale.py``): ``--sizes 2000,10000``
(users; 200 groups each), ``--large`` (adds 30,000), ``--baseline DIR`` (a checkout
of another revision, e.g. ``git archive main | tar -x -C /tmp/main-code``: every measurement is also run with its
code, in the same run, and printed as before/after), ``--no-analyze-only`` / ``--analyze-only``.

Needs PostgreSQL (``BENCH_DATABASE_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a private
database is created next to it per measurement and dropped afterwards). Each measurement runs in a child process
(so its peak RSS is its own) with the emulator in a process of its own (its memory and paging are not ours):

1. a fresh database, migrated, mirrored from the emulator, then *N* users in 200 groups created in the emulator
   (each user in two groups);
2. optionally ``ANALYZE`` (without it the planner has no statistics, as on a fresh database);
3. a full resync that creates everything (timed), then a second one that finds nothing to do (timed).

Printed: seconds and ms/user of both resyncs, the child's peak RSS, and the ratio of ms/user between each size
and the smallest (target: within 20 %); the 10,000-user total (target: at most 20 s and 200 MB).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_ORG = "org_01HTDQ8A100000000000000001"
GROUPS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child(root: Path, users: int, analyze: bool) -> dict[str, Any]:
    """One measurement with the code under *root*; returns its figures."""
    sys.path.insert(0, str(root))
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    admin_url = make_url(base)
    name = f"hd_scale_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        emulator = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); sys.argv[1:2] = []; "
             "from workos_emulator.__main__ import main; main()", str(root), "--port", str(port),
             "--data-dir", str(Path(tmp) / "emulator")], cwd=root, stdout=subprocess.DEVNULL)
        try:
            return _measure(root, admin_url.set(database=name).render_as_string(hide_password=False),
                            f"http://127.0.0.1:{port}", Path(tmp), users, analyze)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def _wait_up(url: str) -> None:
    import urllib.request

    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/_emulator/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the emulator did not start")


def _populate(url: str, users: int) -> None:
    import urllib.request

    def post(body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{url}/_emulator/directories/{ACME_DIR}/bulk",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer sk_test_emulator"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out

    group_ids = post({"groups": [{"name": f"Team {g:03d}"} for g in range(GROUPS)], "users": [],
                      "emit_events": False})["groups"]
    for start in range(0, users, 1000):
        post({"users": [{"email": f"big{n}@acme.test", "first_name": "Big", "last_name": str(n),
                         "groups": [group_ids[n % GROUPS], group_ids[(n * 7 + 1) % GROUPS]]}
                        for n in range(start, min(start + 1000, users))], "emit_events": False})


def _measure(root: Path, database_url: str, emulator_url: str, tmp: Path, users: int,
             analyze: bool) -> dict[str, Any]:
    os.environ["HATIDATA_INSTANCE_PATH"] = str(tmp / "instance")
    _wait_up(emulator_url)
    from flask_migrate import upgrade
    from sqlalchemy import text

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor
    from hatidata_auth.extensions import db
    from hatidata_auth.models import Organization
    from hatidata_auth.services import reconcile
    from hatidata_auth.services.organizations import sync_from_workos

    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "WORKOS_BASE_URL": emulator_url,
                      "WORKOS_WEBHOOK_SECRET": "whsec_bench_secret_value_0123456789", "HATIDATA_ENV": "development"})
    with app.app_context():
        cwd = os.getcwd()
        os.chdir(root)  # Flask-Migrate finds ./migrations
        try:
            upgrade()
        finally:
            os.chdir(cwd)
        client = app.extensions["hatidata_workos"].client
        sync_from_workos(db.session(), client, Actor.system("bench"))
        db.session.commit()
        acme_id = db.session.query(Organization.id).filter_by(workos_organization_id=ACME_ORG).scalar()
        db.session.commit()
    _populate(emulator_url, users)
    with app.app_context():
        if analyze:
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        first = reconcile.full_resync(db.session(), client, organization_id=acme_id)
        create_s = time.perf_counter() - started
        started = time.perf_counter()
        again = reconcile.full_resync(db.session(), client, organization_id=acme_id)
        noop_s = time.perf_counter() - started
    return {"users": users, "analyze": analyze, "create_s": create_s, "noop_s": noop_s,
            "users_seen": first.users_seen, "differences": first.differences,
            "noop_differences": again.differences, "rss_before_mb": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(root: Path, users: int, analyze: bool) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter; returns its figures."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), str(users),
                          "1" if analyze else "0"], capture_output=True, text=True, cwd=root, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("SCALE ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed ({root}, {users}, analyze={analyze}):\n{out.stderr[-4000:]}")
    figures: dict[str, Any] = json.loads(lines[-1][len("SCALE "):])
    return figures


def _line(label: str, r: dict[str, Any]) -> str:
    n = r["users"]
    return (f"  {label:6} {n:>6} users: create {r['create_s']:6.1f} s = {1000 * r['create_s'] / n:5.2f} ms/user; "
            f"no-op {r['noop_s']:6.1f} s = {1000 * r['noop_s'] / n:5.2f} ms/user; peak RSS {r['peak_rss_mb']:4.0f} MB "
            f"(differences {r['differences']}, then {r['noop_differences']})")


def resync_curve(sizes: list[int], *, baseline: str | None, modes: list[bool]) -> None:
    """Measure and print the resync curve: each size with and/or without ``ANALYZE`` (*modes*), for this checkout
    and, if given, the *baseline* checkout in the same run."""
    roots = [("after", HERE)] + ([("before", Path(baseline).resolve())] if baseline else [])
    for analyze in modes:
        print(f"[resync] {'with' if analyze else 'without'} ANALYZE, {GROUPS} groups, 2 groups per user")
        results: dict[str, list[dict[str, Any]]] = {}
        for label, root in roots:
            for n in sizes:
                r = run_child(root, n, analyze)
                results.setdefault(label, []).append(r)
                print(_line(label, r), flush=True)
        for label, rows in results.items():
            small = rows[0]
            for r in rows[1:]:
                ratio_c = (r["create_s"] / r["users"]) / (small["create_s"] / small["users"])
                ratio_n = (r["noop_s"] / r["users"]) / (small["noop_s"] / small["users"])
                print(f"  {label}: ms/user at {r['users']} / at {small['users']}: create {ratio_c:.2f}, "
                      f"no-op {ratio_n:.2f} (target <= 1.20)")
        if "before" in results:
            for after, before in zip(results["after"], results["before"], strict=True):
                print(f"  after/before at {after['users']}: create {after['create_s'] / before['create_s']:.2f}, "
                      f"no-op {after['noop_s'] / before['noop_s']:.2f}, "
                      f"peak RSS {after['peak_rss_mb'] / before['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print("SCALE " + json.dumps(child(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")), flush=True)
    else:
        sys.exit("run it as: python -m bench.scale --curve resync [--sizes 2000,10000] [--large] [--baseline DIR]")
