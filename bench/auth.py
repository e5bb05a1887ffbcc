"""Authentication throughput and revocation propagation, measured against a baseline in the same run.

    python -m bench.auth [--profile production|embedded|both] [--sessions 1,100,10000] [--duration 5]
        [--clients 4] [--rounds 2] [--trials 20] [--workers 2] [--expected-sessions N] [--cache-ttl 5]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--redis-url redis://127.0.0.1:6379/0]

Starts the WorkOS emulator (in this process) and, per profile, gunicorn (``--workers`` sync workers):

- ``production``: the production profile on a private PostgreSQL database and Redis;
- ``embedded``: ``make run``'s default, the development profile: SQLite and the file cache under a private
  instance folder, no Redis.

For each profile and each ``--sessions`` count N it measures, alternating ``--rounds`` times, requests/s of
``GET /healthz`` (the unauthenticated baseline of the same app) and ``GET /api/v1/me`` by session **cookie**, by
**bearer** access token (both cycling over N distinct live sessions, minted straight into the database and signed
by the emulator's key for an hour), and by **API key** (one key); then the revocation propagation (``--trials``:
from the revoke call returning until 20 consecutive requests are refused). It prints how long minting, warming
and measuring took, each ratio to the baseline, the ratio with the most sessions against the one with the
fewest, and the CPU milliseconds per request of the gunicorn workers (as a ratio to the baseline's, measured in
the same round) and of the load generator (``--clients`` processes spawned before any credential exists, sending
each phase's requests from a mapped file: ``bench/auth_clients.py``; it shares the machine, and the server's CPU
per request tells the server's growth apart from the generator's), the workers' full
garbage collections during each kind's phases and the seconds they took (each one walks every tracked object, the
cached sessions' included: a pause that grows with N), and whether the
targets are met: cookie and bearer at least 0.9 of ``/healthz``, the ratio with the most
sessions within 10 % of the fewest, revocation p99 at most 1 s.

What is measured is the steady state where every worker holds every session in its in-process caches. Before the
measure, each session's cookie and then its token run exactly once through each worker's app, on a private port
per worker (``bench/auth_warm.py``: N x 2 x workers requests, every answer must be a 200); after it, each
worker's live entries of its status, unsealed-cookie and verified-token caches are counted, and (unless
``--cache-ttl`` is given) a count below N fails the run.

``--cache-ttl S`` sets the servers' ``HATIDATA_SESSION_CACHE_TTL`` (default 300 s, longer than a run's phases): a
few seconds make the phases outlive the status and unsealed-cookie entries, so what a TTL costs a credential in use
(renewed on hits, or reloaded from the shared cache) shows in the ratios. A credential is kept in memory only while
each worker sees it again within half the TTL: with N sessions cycled by the bench, about N x workers / (req/s).
The warm-up and the measure together must then fit in the TTL (the counts after the measure show whether they did).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.auth_clients import Clients, write_requests
from bench.auth_setup import API_KEY, CLIENT_ID, Served, live_sessions, login, raw, request, safe_status, serve
from bench.auth_warm import BATCH, gc_clocks, live_counts, warm_workers
from bench.dsync_bench import cpu_seconds
from hatidata_auth.config import DEFAULTS

KINDS = ("baseline", "cookie", "bearer", "api_key")


@dataclass(frozen=True, slots=True)
class Measured:
    """One kind's run: requests/s (2xx only), failed answers (not 2xx, or none), and CPU milliseconds per request of
    the gunicorn workers (the server's cost of the request) and of the load generator's processes."""

    rps: float
    bad: int
    server_ms: float
    generator_ms: float


def _workers_cpu(server_pid: int) -> float:
    """CPU seconds the gunicorn master's workers have used (``/proc``), summed."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    pids = [int(x) for x in children.read_text().split()] if children.exists() else []
    return sum(cpu_seconds(pid) for pid in pids)


def measure(clients: Clients, port: int, requests: Path, count: int, duration: float, server_pid: int) -> Measured:
    """The *clients* cycling over the *count* requests written to *requests* for *duration* seconds against
    *port*."""
    server_before = _workers_cpu(server_pid)
    load = clients.run(port, requests, count, duration)
    server = _workers_cpu(server_pid) - server_before
    answered = max(1, load.ok + load.bad)
    return Measured(load.ok / load.elapsed, load.bad, 1000 * server / answered, 1000 * load.cpu / answered)


def credentials(served: Served, emulator: Any, count: int) -> dict[str, list[bytes]]:
    """The requests of each kind: *count* distinct sessions by cookie and by bearer, one API key."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services import api_keys

    tokens, me = login(served.app, "dev@acme.test")
    with served.app.app_context():
        created = api_keys.create_key(db.session(), organization_id=me["organization_id"],
                                      owner_user_id=me["user_id"], name="bench-agent", scopes=["data:read"],
                                      cause=Cause.by(Actor.system()))
        db.session.commit()
    # Every session minted with an hour-long token: the sign-in's own lives the emulator's 300 s, and once it
    # expired its cookie was refreshed while the load kept sending the old one (a browser takes the new cookie),
    # so the bench counted a refusal of its own making.
    pairs = live_sessions(served.app, emulator, tokens, me, count)
    found = {"baseline": [raw("/healthz")], "cookie": [raw("/api/v1/me", cookie=c) for _, c in pairs],
             "bearer": [raw("/api/v1/me", bearer=t) for t, _ in pairs],
             "api_key": [raw("/api/v1/me", bearer=created.secret)]}
    for kind, raws in found.items():
        assert safe_status(served.port, raws[0]) == 200, f"{kind} refused"
        assert safe_status(served.port, raws[-1]) == 200, f"{kind} refused"
    return found


def throughput(served: Served, clients: Clients, raws: dict[str, list[bytes]], args: argparse.Namespace
               ) -> tuple[dict[str, float], bool]:
    """Mean req/s of each kind over ``--rounds`` alternating rounds, and whether every worker still held every
    session in its in-process caches after them."""
    started = warmed = time.monotonic()
    # a file per kind and session count: a client's mapping of an earlier count's file must never be read as this one
    files = {kind: write_requests(served.folder / f"{kind}-{len(raws['cookie'])}.requests", found)
             for kind, found in raws.items()}
    for kind in ("baseline", "api_key"):
        clients.run(served.port, files[kind], 1, 0.5)
    # each session's cookie then its token, in batches, once in every worker (bench.auth_warm)
    count = len(raws["cookie"])
    both = [raw for offset in range(0, count, BATCH)
            for kind in ("cookie", "bearer") for raw in raws[kind][offset:offset + BATCH]]
    statuses, cpus = warm_workers(served.warm_ports, both)
    print(f"    warmed {len(both)} requests x {len(served.warm_ports)} workers in {time.monotonic() - started:.1f} s,"
          f" worker CPU {', '.join(f'{cpu:.1f}' for cpu in cpus)} s (statuses {dict(statuses)})", flush=True)
    assert set(statuses) == {200}, f"warm-up refused: {dict(statuses)}"
    started = time.monotonic()
    totals: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    errors = dict.fromkeys(KINDS, 0)
    full_gc = {kind: [0, 0.0] for kind in KINDS}  # full collections and their seconds, all workers
    for _ in range(args.rounds):
        for kind in KINDS:
            clocks = gc_clocks(served.warm_ports)
            found = measure(clients, served.port, files[kind], len(raws[kind]), args.duration, served.process.pid)
            for before, after in zip(clocks, gc_clocks(served.warm_ports), strict=True):
                if after["collections"][2] > before["collections"][2]:
                    full_gc[kind][0] += after["collections"][2] - before["collections"][2]
                    full_gc[kind][1] += after["seconds"][2] - before["seconds"][2]
            totals[kind].append(found.rps)
            cpu[kind].append((found.server_ms, found.generator_ms))
            errors[kind] += found.bad
    live = live_counts(served.warm_ports)
    held = all(entries >= count for worker in live for entries in worker.values())
    print(f"    measured in {time.monotonic() - started:.1f} s; live cache entries per worker after it: {live} "
          f"({'every' if held else 'NOT every'} worker holds all {count} sessions)", flush=True)
    ttl = args.cache_ttl or DEFAULTS["HATIDATA_SESSION_CACHE_TTL"]
    if not held and time.monotonic() - warmed > ttl:
        print(f"    the warm-up and the measure outlasted the status cache TTL ({ttl} s): entries warmed first expired"
              f" before the measure ended (a longer --cache-ttl keeps them)", flush=True)
    # a --cache-ttl shorter than the phase asks for entries to expire: a count below N is then the point
    held = held or (args.cache_ttl is not None and args.cache_ttl < time.monotonic() - warmed)
    means = {kind: statistics.mean(values) for kind, values in totals.items()}
    server_ms = {kind: statistics.mean(s for s, _ in values) for kind, values in cpu.items()}
    for kind in KINDS:
        generator_ms = statistics.mean(g for _, g in cpu[kind])
        print(f"    {kind:9s} {means[kind]:8.0f} req/s  ratio {means[kind] / means['baseline']:5.2f}  "
              f"failed {errors[kind]}  CPU per request: server {server_ms[kind] / server_ms['baseline']:5.2f} of "
              f"the baseline's, generator {generator_ms:.3f} ms; full GC {full_gc[kind][0]} in "
              f"{full_gc[kind][1]:.2f} s", flush=True)
    means.update({f"{kind}_cpu": server_ms[kind] / server_ms["baseline"] for kind in KINDS})
    if any(errors.values()):  # a failed answer (or one that never came) may stretch its phase: no valid ratio
        print(f"    failed answers {errors}: this measure is not valid", flush=True)
    return means, held and not any(errors.values())


def propagation(served: Served, trials: int) -> float:
    """Revocation propagation p99 (s) over *trials* sessions; prints p50/p99/max."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services import sessions as session_service

    delays: list[float] = []
    for trial in range(trials):
        tokens, me = login(served.app, "viewer@acme.test" if trial % 2 else "admin@acme.test")
        data = raw("/api/v1/me", bearer=str(tokens["access_token"]))
        for _ in range(20):
            request(served.port, data)
        with served.app.app_context():
            session_service.revoke_session(db.session(), served.app.extensions["hatidata_workos"].client,
                                           organization_id=me["organization_id"], session_id=me["session_id"],
                                           cause=Cause(Actor.system(), reason="bench"))
            db.session.commit()
        delays.append(_until_rejected(served.port, data, time.monotonic()))
    delays.sort()
    p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
    print(f"    revocation propagation over {len(delays)} trials: p50 {statistics.median(delays) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms", flush=True)
    return p99


def _until_rejected(port: int, data: bytes, since: float, needed: int = 20) -> float:
    """Seconds from *since* until *needed* consecutive requests (spread over the workers) are refused."""
    streak = 0
    first_reject = since
    while streak < needed:
        if request(port, data) == 401:
            if streak == 0:
                first_reject = time.monotonic()
            streak += 1
        else:
            streak = 0
        if time.monotonic() - since > 10:
            return float("inf")
    return first_reject - since


def run_profile(profile: str, emulator: Any, clients: Clients, args: argparse.Namespace) -> bool:
    """Measure one profile for every session count; whether its targets are met."""
    counts = sorted({int(n) for n in args.sessions.split(",")})
    served = serve(profile, emulator.url, workers=args.workers, database_url=args.database_url,
                   redis_url=args.redis_url, expected_sessions=args.expected_sessions, cache_ttl=args.cache_ttl)
    try:
        print(f"{profile}: gunicorn {args.workers} workers, {args.clients} clients, {args.duration:.0f} s x "
              f"{args.rounds} rounds per kind, status cache TTL {args.cache_ttl or 'default'}", flush=True)
        ratios: dict[int, dict[str, float]] = {}
        steady = True
        for count in counts:
            print(f"  {count} live session(s)", flush=True)
            started = time.monotonic()
            raws = credentials(served, emulator.emulator, count)
            print(f"    minted in {time.monotonic() - started:.1f} s", flush=True)
            means, held = throughput(served, clients, raws, args)
            steady = steady and held
            ratios[count] = {kind: means[kind] / means["baseline"] for kind in KINDS}
            ratios[count].update({f"{kind}_cpu": means[f"{kind}_cpu"] for kind in KINDS})
        ok = steady and all(ratios[c][k] >= 0.9 for c in counts for k in ("cookie", "bearer"))
        if len(counts) > 1:
            few, many = ratios[counts[0]], ratios[counts[-1]]
            for kind in ("cookie", "bearer"):
                change = many[kind] / few[kind]
                cpu_change = few[f"{kind}_cpu"] / many[f"{kind}_cpu"]
                print(f"  {kind}: ratio with {counts[-1]} sessions / with {counts[0]}: {change:.2f} (server CPU per "
                      f"request relative to the baseline's, with {counts[0]} / with {counts[-1]}: {cpu_change:.2f})",
                      flush=True)
                ok = ok and change >= 0.9
        p99 = propagation(served, args.trials) if args.trials else 0.0
        ok = ok and p99 <= 1.0
        print(f"  {profile} targets (cookie and bearer >= 0.90, many sessions within 10 %, p99 <= 1 s):",
              "met" if ok else "NOT met", flush=True)
        return ok
    finally:
        print(f"  (server log: {served.folder / 'gunicorn.log'})")
        served.stop()


def build_parser() -> argparse.ArgumentParser:
    """The options (``BENCH_ARGS``); ``--duration`` is common to every benchmark (``bench/options.py``)."""
    parser = argparse.ArgumentParser(prog="bench.auth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("production", "embedded", "both"), default="both")
    parser.add_argument("--sessions", default="1", help="comma-separated counts of distinct live sessions")
    parser.add_argument("--expected-sessions", type=int, default=None,
                        help="HATIDATA_EXPECTED_LIVE_SESSIONS for the server (default: the app's)")
    parser.add_argument("--cache-ttl", type=int, default=None,
                        help="HATIDATA_SESSION_CACHE_TTL (seconds) for the servers (default: the app's, 300)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternate baseline/auth measurements this often")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from workos_emulator.testing import EmulatorServer

    clients = Clients(args.clients)  # before anything else: the clients hold none of the bench's heap
    emulator = EmulatorServer(api_key=API_KEY, client_id=CLIENT_ID).start()
    try:
        profiles = ("production", "embedded") if args.profile == "both" else (args.profile,)
        results = [run_profile(profile, emulator, clients, args) for profile in profiles]
    finally:
        emulator.stop()
        clients.close()
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
