"""The ``hatidata audit`` commands beyond verify and export: verify a received stream offline, and run the audit
worker (checkpoints, export jobs) outside the web processes."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext


def _keys_from(path: str | None) -> dict[str, str]:
    from . import audit_runtime
    from .services import audit_signing

    if path is None:  # the keys this deployment's configuration trusts
        return audit_signing.trusted_keys(audit_runtime.signer(current_app),
                                          current_app.config.get("HATIDATA_AUDIT_TRUSTED_KEYS"))
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = json.load(handle)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"not a JSON file of signing keys ({exc})", param_hint="--keys") from exc
    entries = data.get("data", []) if isinstance(data, dict) else data
    return {str(k["kid"]): str(k["public_key"]) for k in entries if isinstance(k, dict) and "kid" in k}


@click.command("verify-stream")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--keys", "keys_file", help="The JSON of GET /api/v1/audit-events/signing-keys (default: this "
                                          "deployment's keys).")
@with_appcontext
def verify_stream_command(file: Any, keys_file: str | None) -> None:
    """Check a received NDJSON audit stream offline: links, hashes, gaps and signed checkpoints; names the first
    bad event and exits 1."""
    from .services.audit_stream import bounded_lines, verify_stream

    report = verify_stream(bounded_lines(file), _keys_from(keys_file))
    if not report.ok:
        click.echo(f"BROKEN: {report.problem}")
        raise click.exceptions.Exit(1)
    if not report.events:
        click.echo("ok: the stream holds no events" + ("" if report.trailer is None else "; trailer matches"))
        return
    unsigned = (report.last_seq or 0) - (report.last_checkpoint_seq or (report.first_seq or 1) - 1)
    click.echo(f"ok: events #{report.first_seq}..#{report.last_seq} ({report.events} events, {report.duplicates} "
               f"repeated deliveries ignored), {report.checkpoints} signed checkpoint(s) verified"
               + (f", last at #{report.last_checkpoint_seq}" if report.last_checkpoint_seq else "")
               + (f"; {unsigned} event(s) after it not yet signed" if unsigned > 0 else "")
               + ("" if report.trailer is None else "; trailer matches"))


@click.command("work")
@click.option("--once", is_flag=True, help="One pass (checkpoints, export jobs, expiry), then exit.")
@with_appcontext
def work_command(once: bool) -> None:
    """Run the audit worker: sign due checkpoints and run export jobs (for deployments with
    HATIDATA_AUDIT_WORKER=0 in the web processes)."""
    from . import audit_runtime

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(json.dumps(audit_runtime.run_once(app), sort_keys=True))  # the first pass here: errors surface
    if once:
        return
    worker = audit_runtime.AuditWorker(app, period=5.0)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    worker.start()
    click.echo("audit worker running; SIGTERM stops")
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    worker.stop()
