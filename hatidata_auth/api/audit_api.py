"""``/api/v1/audit-events``: the organization's audit log: filter, read, verify and export (streamed)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, stream_with_context
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate, validates_schema

from .. import audit_runtime
from ..config import DEFAULTS
from ..errors import AppError
from ..extensions import db
from ..identity import current_identity
from ..inputs import INT64_MAX
from ..services import audit_checkpoints, audit_exports, audit_queries, audit_signing
from .common import Instant, PageArgsSchema, decode_cursor, encode_cursor, guard, page_schema, timestamp

blp = Blueprint("audit-events", __name__, description="The tamper-evident audit log of the organization.")
BLUEPRINTS = (blp,)


class ActorSchema(Schema):
    type = fields.String(required=True)
    id = fields.String(allow_none=True, required=True)
    email = fields.String(allow_none=True, required=True)


class TargetSchema(Schema):
    type = fields.String(allow_none=True, required=True)
    id = fields.String(allow_none=True, required=True)


class AuditEventSchema(Schema):
    id = fields.String(required=True)
    organization_id = fields.String(allow_none=True, required=True)
    seq = fields.Integer(required=True, metadata={"description": "Position in the organization's hash chain."})
    created_at = timestamp(required=True)
    actor = fields.Nested(ActorSchema, required=True)
    action = fields.String(required=True)
    target = fields.Nested(TargetSchema, required=True)
    outcome = fields.String(required=True)
    ip_address = fields.String(allow_none=True, required=True)
    user_agent = fields.String(allow_none=True, required=True)
    request_id = fields.String(allow_none=True, required=True)
    source_event_id = fields.String(allow_none=True, required=True)
    details = fields.Dict(required=True)
    prev_hash = fields.String(required=True)
    hash = fields.String(required=True)


class RangeArgs(Schema):
    since = Instant(metadata={"description": "From this time (inclusive)."})
    until = Instant(metadata={"description": "Before this time (exclusive)."})

    @validates_schema
    def ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            from marshmallow import ValidationError

            raise ValidationError("Must not be before since.", field_name="until")


_short = validate.Length(min=1, max=320)


class AuditListArgs(PageArgsSchema, RangeArgs):
    actor_id = fields.String(validate=_short)
    actor_type = fields.String(validate=validate.OneOf(["user", "api_key", "workos", "system"]))
    actor_email = fields.String(validate=_short)
    action = fields.String(validate=_short)
    target_type = fields.String(validate=_short)
    target_id = fields.String(validate=_short)
    outcome = fields.String(validate=_short)


class ExportArgs(RangeArgs):
    format = fields.String(load_default="ndjson", validate=validate.OneOf(list(audit_queries.EXPORT_FORMATS)))
    cursor = fields.String(metadata={"description": "NDJSON: the trailer's `next_cursor` of the previous part."})


class VerifyArgs(Schema):
    full = fields.Boolean(load_default=False, metadata={"description": "Walk from the first event, not from the "
                                                                     "newest trusted checkpoint."})
    cursor = fields.String(metadata={"description": "The `next_cursor` of an incomplete answer: continue there."})


class ChainSchema(Schema):
    organization_id = fields.String(allow_none=True, required=True)
    ok = fields.Boolean(required=True)
    checked = fields.Integer(required=True, metadata={"description": "Events verified by this answer."})
    first_broken_seq = fields.Integer(allow_none=True, required=True)
    problem = fields.String(allow_none=True, required=True)
    from_seq = fields.Integer(required=True, metadata={"description": "Verified the events after this one."})
    checkpoint = fields.Dict(allow_none=True, required=True,
                             metadata={"description": "The signed checkpoint it started from, if any."})
    last_seq = fields.Integer(required=True)
    complete = fields.Boolean(required=True, metadata={"description": "False: the request budget ran out."})
    next_cursor = fields.String(allow_none=True, required=True,
                                metadata={"description": "Pass as `cursor` to continue (with `complete` false)."})


AuditPage = page_schema(AuditEventSchema, "AuditEventPage", next_cursor=(
    "Pass as `cursor` for the next page; `null` only on the last page. A page may hold fewer than `limit` events, "
    "even none, while `next_cursor` is set: each page scans a bounded part of the log (`HATIDATA_AUDIT_PAGE_BUDGET`), "
    "so keep following `next_cursor` until it is `null`."))


def _reveal() -> bool:
    """WorkOS session ids are shown only to who may revoke sessions (``sessions:write``, within a key's scopes)."""
    return current_identity.has_permission("sessions:write")


def _filter(args: dict[str, Any]) -> audit_queries.AuditFilter:
    keys = ("actor_id", "actor_type", "actor_email", "action", "target_type", "target_id", "outcome", "since",
            "until")
    return audit_queries.AuditFilter(**{k: args.get(k) for k in keys})


@blp.route("/audit-events", methods=["GET"])
@guard(blp, "audit:read")
@blp.arguments(AuditListArgs, location="query")
@blp.response(200, AuditPage)
def list_events(args: dict[str, Any]) -> dict[str, Any]:
    """Events, newest first, filtered by actor, action, target, outcome and time range.

    A page may hold fewer than `limit` events, even none, and still have a `next_cursor`: when matches are rare,
    each page scans a bounded part of the log. Follow `next_cursor` until it is `null`."""
    before = decode_cursor(args.get("cursor"), int)
    views, next_seq = audit_queries.events_page(db.session(), current_identity.organization_id, _filter(args),
                                                before_seq=before, limit=args["limit"], reveal_session_ids=_reveal(),
                                                budget=_budget("HATIDATA_AUDIT_PAGE_BUDGET"))
    return {"data": [view.to_json() for view in views],
            "next_cursor": None if next_seq is None else encode_cursor(next_seq)}


def _budget(name: str = "HATIDATA_AUDIT_REQUEST_BUDGET") -> float:
    value = current_app.config.get(name)
    return float(DEFAULTS[name] if value is None else value)


def _resume(cursor: str | None) -> tuple[int, str] | None:
    value = decode_cursor(cursor, str)
    if value is None:
        return None
    seq, _, chain_hash = value.partition(":")
    # ASCII digits only (str.isdigit() accepts "²", which int() refuses) and within the 64-bit seq column.
    if not (seq.isascii() and seq.isdigit() and len(seq) <= 19 and int(seq) <= INT64_MAX) or len(chain_hash) != 64:
        raise AppError("The cursor is not a verification cursor.", status=422, code="validation_error",
                       details={"fields": {"cursor": ["Not a verification cursor."]}})
    return int(seq), chain_hash


@blp.route("/audit-events/verify", methods=["GET"])
@guard(blp, "audit:read")
@blp.arguments(VerifyArgs, location="query")
@blp.response(200, ChainSchema)
def verify(args: dict[str, Any]) -> dict[str, Any]:
    """Verify the organization's hash chain from its newest trusted signed checkpoint (`full`: from the first
    event); names the first broken link. Past the request budget: `complete` false and a `next_cursor`."""
    keys = audit_signing.trusted_keys(audit_runtime.signer(current_app),
                                      current_app.config.get("HATIDATA_AUDIT_TRUSTED_KEYS"))
    result = audit_checkpoints.verify(db.session(), current_identity.organization_id, keys, full=args["full"],
                                      resume=_resume(args.get("cursor")), budget=_budget())
    report = result.report
    return {"organization_id": report.organization_id, "ok": report.ok, "checked": report.checked,
            "first_broken_seq": report.first_broken_seq, "problem": report.problem, "from_seq": report.from_seq,
            "checkpoint": result.checkpoint.to_json() if result.checkpoint else None, "last_seq": report.last_seq,
            "complete": report.complete,
            "next_cursor": None if report.complete or not report.ok
            else encode_cursor(f"{report.last_seq}:{report.last_hash}")}


@blp.route("/audit-events/export", methods=["GET"])
@guard(blp, "audit:read")
@blp.arguments(ExportArgs, location="query")
@blp.doc(responses={"200": {"description": "The events in chain order, streamed.", "content": {
    "application/x-ndjson": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
}}})
def export(args: dict[str, Any]) -> Response:
    """Stream the events of a time range as NDJSON (default) or CSV, without loading the range into memory.

    NDJSON ends with a trailer line (count, final hash); past `HATIDATA_AUDIT_EXPORT_MAX_ROWS` rows or the request
    budget the trailer says `complete: false` with a `next_cursor` for the next part. CSV has no trailer: a
    range above the row budget is 413 `export_too_large` (use NDJSON or `POST /audit-events/exports`). Needs a
    sign-in within the organization's step-up window (else 401 `reauthentication_required`)."""
    writer, mimetype = audit_queries.EXPORT_FORMATS[args["format"]]
    flt = audit_queries.AuditFilter(since=args.get("since"), until=args.get("until"))
    organization_id = current_identity.organization_id
    max_rows = int(current_app.config.get("HATIDATA_AUDIT_EXPORT_MAX_ROWS")
                   or DEFAULTS["HATIDATA_AUDIT_EXPORT_MAX_ROWS"])
    if args["format"] == "ndjson":
        rows = audit_exports.export_lines(db.session(), organization_id, flt, reveal_session_ids=_reveal(),
                                          after_seq=decode_cursor(args.get("cursor"), int) or 0,
                                          max_rows=max_rows, budget=_budget())
    elif audit_queries.count_matching(db.session(), organization_id, flt, limit=max_rows + 1) > max_rows:
        raise AppError(f"More than {max_rows} events: export them as NDJSON (paged by its trailer's cursor) or "
                       "with POST /api/v1/audit-events/exports.", status=413, code="export_too_large")
    else:
        rows = writer(db.session(), organization_id, flt, reveal_session_ids=_reveal())
    response = Response(stream_with_context(rows), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{organization_id}.{args["format"]}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/audit-events/<event_id>", methods=["GET"])
@guard(blp, "audit:read")
@blp.response(200, AuditEventSchema)
def get_event(event_id: str) -> dict[str, Any]:
    """One event."""
    view = audit_queries.get_event_view(db.session(), current_identity.organization_id, event_id,
                                        reveal_session_ids=_reveal())
    if view is None:
        raise AppError("No such audit event.", status=404, code="not_found")
    return view.to_json()
