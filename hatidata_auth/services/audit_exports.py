"""Exports of the audit log that survive any size: NDJSON ending with a trailer, paged by a continuation cursor
within a request's budget, or written to a file by a background job (docs/audit.md, "Export at scale").

The trailer (``{"type": "trailer", "count", "final_hash", "complete", "next_cursor", "checkpoint"}``) is always
the last line: an export without it was cut. Checkpoint records (``{"type": "checkpoint", …}``) follow the
event they sign, so a job's file is a stream ``hatidata audit verify-stream`` checks offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, false, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..causes import Cause
from ..errors import AppError
from ..models import AuditEvent, AuditExportJob, new_id, utcnow
from . import audit, audit_checkpoints
from .audit_queries import AuditFilter, event_view, filtered, redacted

BUDGET_CHECK_EVERY = 500
JOB_STATUSES = ("pending", "running", "done", "failed", "expired")
ACTIVE_STATUSES = ("pending", "running")


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def _seq_range(session: Session, organization_id: str, flt: AuditFilter) -> list[Any]:
    """A time range as the smallest contiguous ``seq`` range holding every event created in it (first to last
    ``seq`` with ``since <= created_at < until``): ``seq`` is taken at commit, ``created_at`` at record time, so
    filtering each event by time would leave a late-committed event out of the middle of the file and break its
    chain."""
    if flt.since is None and flt.until is None:
        return []
    in_range = filtered(organization_id, flt).with_only_columns(func.min(AuditEvent.seq), func.max(AuditEvent.seq))
    first, last = session.execute(in_range).one()
    return [false()] if first is None else [AuditEvent.seq.between(first, last)]


def export_lines(session: Session, organization_id: str, flt: AuditFilter, *, reveal_session_ids: bool = False,
                 after_seq: int = 0, max_rows: int | None = None, budget: float | None = None,
                 clock: Callable[[], float] = time.monotonic, with_checkpoints: bool = False) -> Iterator[str]:
    """NDJSON lines of the events of the time range (:func:`_seq_range`) after *after_seq* in chain order, then the
    trailer. Past *max_rows*
    rows or *budget* seconds (checked every :data:`BUDGET_CHECK_EVERY` rows) it stops early: the trailer says
    ``complete: false`` and gives ``next_cursor`` (the last ``seq`` sent) to continue from."""
    deadline = None if budget is None else clock() + budget
    query = (filtered(organization_id, None).where(AuditEvent.seq > after_seq, *_seq_range(session, organization_id,
                                                                                      flt))
             .order_by(AuditEvent.seq).execution_options(yield_per=BUDGET_CHECK_EVERY))
    pending = audit_checkpoints.checkpoints(session, organization_id, after_seq=after_seq) if with_checkpoints \
        else []
    count, last_seq, final_hash, signed = 0, after_seq, None, None
    complete = True
    for event in session.scalars(query):
        yield _line(event_view(event, reveal_session_ids=reveal_session_ids).to_json())
        count, last_seq, final_hash = count + 1, event.seq, event.hash
        session.expunge(event)
        while pending and pending[0].seq <= last_seq:
            checkpoint = pending.pop(0)
            if checkpoint.seq == last_seq and checkpoint.hash == final_hash:
                signed = checkpoint
                yield _line(checkpoint.to_json())
        if (max_rows is not None and count >= max_rows) or (
                deadline is not None and count % BUDGET_CHECK_EVERY == 0 and clock() >= deadline):
            complete = False
            break
    yield _line(trailer(count, final_hash, complete=complete, next_cursor=None if complete else last_seq,
                        checkpoint=signed))


def trailer(count: int, final_hash: str | None, *, complete: bool, next_cursor: int | None,
            checkpoint: audit_checkpoints.CheckpointView | None) -> dict[str, Any]:
    """The last line of every NDJSON export."""
    return {"type": "trailer", "count": count, "final_hash": final_hash, "complete": complete,
            "next_cursor": next_cursor, "checkpoint": checkpoint.to_json() if checkpoint else None}


@dataclass(frozen=True, slots=True)
class ExportJobView:
    """A job as ``GET /api/v1/audit-events/exports/{id}`` shows it (``reveal_session_ids``: the level its file was
    written with, not shown)."""

    id: str
    status: str
    format: str
    filters: dict[str, Any]
    count: int | None
    final_hash: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    reveal_session_ids: bool = False

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {"id": self.id, "status": self.status, "format": self.format, "filters": self.filters,
                "count": self.count, "final_hash": self.final_hash, "error": self.error,
                "created_at": iso(self.created_at), "finished_at": iso(self.finished_at),
                "expires_at": iso(self.expires_at)}

    def is_expired(self, now: datetime) -> bool:
        """Past its retention, whether or not a worker pass deleted the file yet."""
        return self.status == "expired" or (self.expires_at is not None and self.expires_at <= now)


class TooManyExportJobs(AppError):
    status = 429
    code = "too_many_export_jobs"


def _view(job: AuditExportJob) -> ExportJobView:
    return ExportJobView(job.id, job.status, job.format, dict(job.filters or {}), job.count, job.final_hash,
                         job.error, job.created_at, job.finished_at, job.expires_at, job.reveal_session_ids)


def create_job(session: Session, organization_id: str, flt: AuditFilter, *, reveal_session_ids: bool,
               cause: Cause, max_jobs: int) -> tuple[ExportJobView, bool]:
    """Queue an export of the organization's events in *flt*'s time range (audited, in the caller's
    transaction; the caller commits, then wakes the worker). Returns the job and whether it is new: an identical
    pending job (same range, same reveal level) is returned instead of a second one; past *max_jobs* pending or
    running jobs of the organization, :class:`TooManyExportJobs`."""
    filters = {k: v.isoformat() for k, v in (("since", flt.since), ("until", flt.until)) if v is not None}
    active = session.scalars(select(AuditExportJob).where(AuditExportJob.organization_id == organization_id,
                                                          AuditExportJob.status.in_(ACTIVE_STATUSES))).all()
    for job in active:
        if job.status == "pending" and dict(job.filters or {}) == filters \
                and job.reveal_session_ids == reveal_session_ids:
            return _view(job), False
    if len(active) >= max_jobs:
        raise TooManyExportJobs(
            f"The organization already has {len(active)} export jobs pending or running (at most {max_jobs}); "
            "download or wait for one of them, then start another.",
            details={"active": len(active), "limit": max_jobs})
    job = AuditExportJob(id=new_id("axp"), organization_id=organization_id, status="pending", format="ndjson",
                         filters=filters, reveal_session_ids=reveal_session_ids, requested_by=cause.actor.id)
    session.add(job)
    session.flush()
    audit.record(session, action="audit.export_requested", cause=cause, organization_id=organization_id,
                 target_type="audit_export", target_id=job.id, details={"filters": filters})
    return _view(job), True


def get_job(session: Session, organization_id: str, job_id: str, *,
            now: datetime | None = None) -> ExportJobView | None:
    """The organization's job (``None`` for another organization's); ``expired`` once past its retention by the
    clock, before a worker pass deletes the file."""
    job = session.scalar(select(AuditExportJob).where(AuditExportJob.organization_id == organization_id,
                                                      AuditExportJob.id == job_id))
    if job is None:
        return None
    view = _view(job)
    return dataclasses.replace(view, status="expired") if view.is_expired(now or utcnow()) else view


def job_path(directory: Path, organization_id: str, job_id: str) -> Path:
    """Where a job's file lives (our own ids only: never a caller's path)."""
    return directory / organization_id / f"{job_id}.ndjson"


def file_lines(path: Path, *, written_revealing: bool, reveal_session_ids: bool) -> Iterator[str]:
    """The lines of a job's file as a reader with *reveal_session_ids* may see them: a file written revealing
    WorkOS session ids has them blanked again (event lines only; ``hash`` covers the stored details, as in every
    redacted read)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not written_revealing or reveal_session_ids:
                yield line
                continue
            value = json.loads(line)
            if "type" not in value and isinstance(value.get("details"), dict):
                value["details"] = redacted(value["details"])
            yield _line(value)


def _filter_of(job: AuditExportJob) -> AuditFilter:
    filters = job.filters or {}
    return AuditFilter(since=datetime.fromisoformat(filters["since"]) if filters.get("since") else None,
                       until=datetime.fromisoformat(filters["until"]) if filters.get("until") else None)


def _claimable(now: datetime) -> ColumnElement[bool]:
    """A job a worker may take: waiting, or running under a lease that ran out (its worker died)."""
    return or_(AuditExportJob.status == "pending",
               and_(AuditExportJob.status == "running",
                    or_(AuditExportJob.lease_until.is_(None), AuditExportJob.lease_until <= now)))


def _settle(session: Session, job_id: str, claim: str, **values: Any) -> bool:
    """Finish the job only if this worker still holds its claim (another may have taken it past the lease)."""
    done = session.execute(update(AuditExportJob).where(AuditExportJob.id == job_id, AuditExportJob.claim == claim)
                           .values(lease_until=None, **values).execution_options(synchronize_session=False))
    session.commit()
    return bool(getattr(done, "rowcount", 0))


def run_job(session: Session, job_id: str, directory: Path, *, retention: int, lease: float = 3600,
            now: datetime | None = None) -> ExportJobView | None:
    """Take one claimable job and write its file (temporary name of this claim, renamed when the trailer is
    written); ``None`` if another worker holds it. The claim is a conditional UPDATE checked by its row count
    (no ``FOR UPDATE``, which SQLite ignores); any exception fails the job and removes the temporary file."""
    now = now or utcnow()
    claim = new_id("clm")
    taken = session.execute(update(AuditExportJob).where(AuditExportJob.id == job_id, _claimable(now))
                            .values(status="running", claim=claim, started_at=now,
                                    lease_until=now + timedelta(seconds=lease))
                            .execution_options(synchronize_session=False))
    session.commit()
    if getattr(taken, "rowcount", 0) != 1:
        return None
    job = session.get(AuditExportJob, job_id, populate_existing=True)
    assert job is not None
    path = job_path(directory, job.organization_id, job.id)
    tmp = path.with_name(f"{job.id}.{claim}.tmp")
    last_line = "{}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as out:
            for line in export_lines(session, job.organization_id, _filter_of(job),
                                     reveal_session_ids=job.reveal_session_ids, with_checkpoints=True):
                out.write(line)
                last_line = line
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - whatever broke the pass, the job must not stay running
        with contextlib.suppress(OSError):
            tmp.unlink()
        session.rollback()
        _settle(session, job_id, claim, status="failed", error=f"{type(exc).__name__}: {exc}"[:512],
                finished_at=now)
        return get_job(session, job.organization_id, job_id)
    last = json.loads(last_line)  # the trailer
    _settle(session, job_id, claim, status="done", count=last.get("count"), final_hash=last.get("final_hash"),
            finished_at=now, expires_at=now + timedelta(seconds=retention))
    return get_job(session, job.organization_id, job_id)


def active_jobs(session: Session, *, now: datetime | None = None) -> list[str]:
    """Ids of the jobs a worker may take (pending, or running past their lease), oldest first."""
    return list(session.scalars(select(AuditExportJob.id).where(_claimable(now or utcnow()))
                                .order_by(AuditExportJob.created_at)))


def expire(session: Session, directory: Path, *, now: datetime | None = None) -> int:
    """Delete the files of finished jobs past their retention (the row stays, ``expired``); returns how many."""
    now = now or utcnow()
    jobs = session.scalars(select(AuditExportJob).where(AuditExportJob.status == "done",
                                                        AuditExportJob.expires_at <= now)).all()
    for job in jobs:
        with contextlib.suppress(OSError):
            job_path(directory, job.organization_id, job.id).unlink()
        job.status = "expired"
    session.commit()
    return len(jobs)
