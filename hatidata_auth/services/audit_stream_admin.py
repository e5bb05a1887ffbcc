"""An organization's audit streams as its admins configure them at ``/api/v1/organization/audit-streams``: create,
list, read, change, enable or disable, delete, and resume a dead-lettered sink (docs/audit.md, "Streaming to a
SIEM"). Every change is audited in the caller's transaction (``audit_stream.created`` / ``updated`` /
``deleted`` / ``retried``); secrets are sealed (:mod:`.secret_seal`) and only their hint ever leaves."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import STREAM_KINDS, AuditChainHead, AuditStream, new_id
from . import alerts, audit, secret_seal
from .audit_sink_endpoints import parse
from .last_admin import lock_organization
from .tenant_admin import Conflict, NotFound

PURPOSE = "audit-stream"
SECRET_KINDS = {"https": "HMAC secret", "splunk_hec": "HEC token", "datadog": "API key"}
MIN_SECRET, MAX_SECRET = 16, 512
GENERATED_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class StreamView:
    """A sink as the API shows it (never its secret: ``secret_hint`` is the last four characters)."""

    id: str
    name: str
    kind: str
    endpoint: str
    secret_hint: str | None
    enabled: bool
    state: str
    cursor: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_delivered_at: datetime | None
    delivered_events: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Created:
    """A new sink and, when the service generated its HMAC secret, that secret (shown this once)."""

    stream: StreamView
    secret: str | None


@dataclass(frozen=True, slots=True)
class StreamChange:
    """What an update changes (``None``: unchanged)."""

    name: str | None = None
    endpoint: str | None = None
    secret: str | None = None
    enabled: bool | None = None


class TooManyStreams(AppError):
    status = 409
    code = "too_many_audit_streams"


def view(row: AuditStream) -> StreamView:
    return StreamView(row.id, row.name, row.kind, row.endpoint, row.secret_hint, row.enabled, row.state, row.cursor,
                      row.attempts, row.next_attempt_at, row.last_error, row.last_delivered_at,
                      row.delivered_events, row.created_at, row.updated_at)


def _row(session: Session, organization_id: str, stream_id: str) -> AuditStream:
    row = session.scalar(select(AuditStream).where(AuditStream.organization_id == organization_id,
                                                   AuditStream.id == stream_id))
    if row is None:
        raise NotFound("No such audit stream.")
    return row


def _audited_endpoint(endpoint: str) -> str:
    """The endpoint as audit details name it: without a query string, which may carry a receiver's token."""
    parts = urlsplit(endpoint)
    return endpoint if not parts.scheme else f"{parts.scheme}://{parts.netloc}{parts.path}"


def _check_secret(kind: str, secret: str | None) -> None:
    if secret is None:
        return
    if kind not in SECRET_KINDS:
        raise AppError("syslog_tls sinks take no secret (the server's certificate is verified).", status=422,
                       code="validation_error", details={"fields": {"secret": ["not used by syslog_tls"]},
                                                         "location": "json"})
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isascii() or not secret.isprintable():
        raise AppError(f"The {SECRET_KINDS[kind]} must be {MIN_SECRET} to {MAX_SECRET} printable ASCII characters.",
                       status=422, code="validation_error",
                       details={"fields": {"secret": [f"{MIN_SECRET} to {MAX_SECRET} printable ASCII characters"]},
                                "location": "json"})


def _store_secret(row: AuditStream, seal_key: str, secret: str) -> None:
    row.secret_sealed = secret_seal.seal(seal_key, PURPOSE, secret)
    row.secret_hint = secret_seal.hint(secret)


def list_streams(session: Session, organization_id: str) -> list[StreamView]:
    """The organization's sinks, oldest first (at most ``HATIDATA_AUDIT_STREAMS_MAX``: no paging)."""
    rows = session.scalars(select(AuditStream).where(AuditStream.organization_id == organization_id)
                           .order_by(AuditStream.created_at, AuditStream.id))
    return [view(r) for r in rows]


def get_stream(session: Session, organization_id: str, stream_id: str) -> StreamView:
    """One sink of the organization (:class:`NotFound` for another organization's, like a missing one)."""
    return view(_row(session, organization_id, stream_id))


def create_stream(session: Session, organization_id: str, *, name: str, kind: str, endpoint: str,
                  secret: str | None, start: str, enabled: bool, reveal_session_ids: bool, seal_key: str,
                  limit: int, allow_loopback: bool, cause: Cause) -> Created:
    """Add a sink (audited ``audit_stream.created``). An ``https`` sink without a secret gets a generated one,
    returned once. *start* ``beginning`` streams the whole chain, ``now`` only events after the current head.
    :class:`TooManyStreams` past *limit* sinks, counted under the organization's lock (creates of one organization
    run one after the other, so concurrent ones never pass *limit*); 422 for a bad endpoint or secret."""
    if kind not in STREAM_KINDS:
        raise AppError(f"kind must be one of {', '.join(STREAM_KINDS)}.", status=422, code="validation_error",
                       details={"fields": {"kind": ["unknown kind"]}, "location": "json"})
    checked = parse(kind, endpoint, allow_loopback=allow_loopback)
    _check_secret(kind, secret)
    generated = None
    if secret is None and kind == "https":
        secret = generated = GENERATED_PREFIX + secrets.token_urlsafe(32)
    if secret is None and kind in SECRET_KINDS:
        raise AppError(f"A {kind} sink needs its {SECRET_KINDS[kind]}.", status=422, code="validation_error",
                       details={"fields": {"secret": ["required"]}, "location": "json"})
    # count then insert is a race unless creates are serialized: lock the organization row (SQLite: take the
    # database's write lock) before counting; the lock lasts until the caller commits.
    lock_organization(session, organization_id)
    count = session.scalar(select(func.count()).select_from(AuditStream)
                           .where(AuditStream.organization_id == organization_id)) or 0
    if count >= limit:
        raise TooManyStreams(f"The organization already has {count} audit streams (at most {limit}).",
                             details={"count": count, "limit": limit})
    cursor = 0
    if start == "now":
        cursor = session.scalar(select(AuditChainHead.seq).where(AuditChainHead.chain_key == organization_id)) or 0
    row = AuditStream(id=new_id("ast"), organization_id=organization_id, name=name, kind=kind,
                      endpoint=checked.value, enabled=enabled, state="active" if enabled else "paused",
                      cursor=cursor, attempts=0, delivered_events=0, reveal_session_ids=reveal_session_ids)
    if secret is not None:
        _store_secret(row, seal_key, secret)
    session.add(row)
    session.flush()
    audit.record(session, action="audit_stream.created", cause=cause, organization_id=organization_id,
                 target_type="audit_stream", target_id=row.id,
                 details={"kind": kind, "endpoint": _audited_endpoint(row.endpoint), "name": name, "start": start,
                          "cursor": cursor, "enabled": enabled})
    return Created(view(row), generated)


def update_stream(session: Session, organization_id: str, stream_id: str, change: StreamChange, *, seal_key: str,
                  allow_loopback: bool, cause: Cause) -> StreamView:
    """Change a sink's name, endpoint, secret or enabled flag (audited ``audit_stream.updated`` naming the fields,
    never the secret). Disabling pauses it; enabling a paused sink makes it ``active`` (a dead-lettered one stays
    so until :func:`retry_stream`)."""
    row = _row(session, organization_id, stream_id)
    changed: dict[str, Any] = {}
    if change.name is not None and change.name != row.name:
        row.name = changed["name"] = change.name
    if change.endpoint is not None:
        value = parse(row.kind, change.endpoint, allow_loopback=allow_loopback).value
        if value != row.endpoint:
            row.endpoint = value
            changed["endpoint"] = _audited_endpoint(value)
    if change.secret is not None:
        _check_secret(row.kind, change.secret)
        _store_secret(row, seal_key, change.secret)
        changed["secret_replaced"] = True
    if change.enabled is not None and change.enabled != row.enabled:
        row.enabled = changed["enabled"] = change.enabled
        if not change.enabled:
            row.state = "paused"
        elif row.state == "paused":
            row.state, row.attempts, row.next_attempt_at = "active", 0, None
    if changed:
        session.flush()
        audit.record(session, action="audit_stream.updated", cause=cause, organization_id=organization_id,
                     target_type="audit_stream", target_id=row.id, details={"changed": changed})
    return view(row)


def delete_stream(session: Session, organization_id: str, stream_id: str, *, cause: Cause) -> None:
    """Remove a sink (audited ``audit_stream.deleted`` with its cursor)."""
    row = _row(session, organization_id, stream_id)
    details = {"kind": row.kind, "endpoint": _audited_endpoint(row.endpoint), "cursor": row.cursor}
    session.delete(row)
    session.flush()
    audit.record(session, action="audit_stream.deleted", cause=cause, organization_id=organization_id,
                 target_type="audit_stream", target_id=stream_id, details=details)
    alerts.resolve_raised(session, organization_id=organization_id, kind=alerts.AUDIT_STREAM_DEAD_LETTER,
                          target_id=stream_id, resolution="audit_stream.deleted", cause=cause)


def retry_stream(session: Session, organization_id: str, stream_id: str, *, cause: Cause) -> StreamView:
    """Resume a ``dead_letter`` or ``retrying`` sink now, from its cursor (audited ``audit_stream.retried``);
    :class:`Conflict` for a sink that is not failing or is disabled."""
    row = _row(session, organization_id, stream_id)
    if row.state not in ("dead_letter", "retrying") or not row.enabled:
        raise Conflict(f"The audit stream is {row.state if row.enabled else 'disabled'}; only a failing, enabled "
                       "stream can be retried.", details={"state": row.state, "enabled": row.enabled})
    previous = row.state
    row.state, row.attempts, row.next_attempt_at = "active", 0, None
    session.flush()
    audit.record(session, action="audit_stream.retried", cause=cause, organization_id=organization_id,
                 target_type="audit_stream", target_id=row.id,
                 details={"from_state": previous, "cursor": row.cursor, "last_error": row.last_error})
    return view(row)
