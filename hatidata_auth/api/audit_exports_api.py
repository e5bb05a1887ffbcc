"""``/api/v1/audit-events/signing-keys`` and ``/api/v1/audit-events/exports``: the public keys of the audit
checkpoints, and exports of any size as background jobs (docs/audit.md, "Export at scale")."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, send_file
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from .. import audit_runtime
from ..errors import AppError
from ..extensions import db
from ..identity import current_identity, request_cause
from ..services import audit_exports, audit_signing
from .audit_api import RangeArgs, _reveal
from .common import guard, timestamp

blp = Blueprint("audit-exports", __name__, description="Checkpoint signing keys and export jobs of the audit log.")
BLUEPRINTS = (blp,)


class SigningKeySchema(Schema):
    kid = fields.String(required=True)
    algorithm = fields.String(required=True, metadata={"description": "Always `Ed25519`."})
    public_key = fields.String(required=True, metadata={"description": "The 32 raw bytes, base64url unpadded."})
    created_at = timestamp(allow_none=True, required=True)
    retired_at = timestamp(allow_none=True, required=True)


class SigningKeysSchema(Schema):
    data = fields.List(fields.Nested(SigningKeySchema), required=True)


class ExportJobSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "pending, running, done, failed or expired."})
    format = fields.String(required=True)
    filters = fields.Dict(required=True)
    count = fields.Integer(allow_none=True, required=True)
    final_hash = fields.String(allow_none=True, required=True)
    error = fields.String(allow_none=True, required=True)
    created_at = timestamp(required=True)
    finished_at = timestamp(allow_none=True, required=True)
    expires_at = timestamp(allow_none=True, required=True)


@blp.route("/audit-events/signing-keys", methods=["GET"])
@guard(blp, "audit:read")
@blp.response(200, SigningKeysSchema)
def signing_keys() -> dict[str, Any]:
    """The Ed25519 public keys that sign checkpoints, current first; retired keys stay listed."""
    keys = audit_signing.published_keys(db.session(), audit_runtime.signer(current_app),
                                        current_app.config.get("HATIDATA_AUDIT_TRUSTED_KEYS"))
    return {"data": [k.to_json() for k in keys]}


@blp.route("/audit-events/exports", methods=["POST"])
@guard(blp, "audit:read")
@blp.arguments(RangeArgs, location="json")
@blp.response(202, ExportJobSchema)
@blp.alt_response(200, schema=ExportJobSchema, description="An identical job (same range, same reveal level) was "
                  "already pending: that job, nothing queued.")
@blp.alt_response(429, description="`too_many_export_jobs`: the organization has `HATIDATA_AUDIT_EXPORT_MAX_JOBS` "
                  "jobs pending or running.")
def start_export(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Queue an NDJSON export of a time range (202, audited); 200 with the identical pending job instead of a
    second one; 429 `too_many_export_jobs` past the organization's limit. Poll its status, then download."""
    flt = audit_exports.AuditFilter(since=args.get("since"), until=args.get("until"))
    job, created = audit_exports.create_job(
        db.session(), current_identity.organization_id, flt, reveal_session_ids=_reveal(), cause=request_cause(),
        max_jobs=int(audit_runtime.setting(current_app, "HATIDATA_AUDIT_EXPORT_MAX_JOBS")))
    db.session.commit()
    audit_runtime.wake(current_app)
    return job.to_json(), 202 if created else 200


def _job(job_id: str) -> audit_exports.ExportJobView:
    job = audit_exports.get_job(db.session(), current_identity.organization_id, job_id)
    if job is None:
        raise AppError("No such export.", status=404, code="not_found")
    return job


@blp.route("/audit-events/exports/<job_id>", methods=["GET"])
@guard(blp, "audit:read")
@blp.response(200, ExportJobSchema)
def get_export(job_id: str) -> dict[str, Any]:
    """The job's status (404 for an unknown id or another organization's); `expired` past the retention."""
    return _job(job_id).to_json()


@blp.route("/audit-events/exports/<job_id>/download", methods=["GET"])
@guard(blp, "audit:read")
@blp.doc(responses={"200": {"description": "The NDJSON file, ending with its trailer.",
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}})
def download_export(job_id: str) -> Response:
    """The finished job's file, redacted for this reader (WorkOS session ids only with `sessions:write`, whatever
    the job's starter could see); 404 unknown, 409 `export_not_ready` while it runs (or failed), 410
    `export_expired` past the retention (by the clock, whether or not a worker pass deleted the file)."""
    job = _job(job_id)
    if job.status == "expired":
        raise AppError("The export's file expired; start a new export.", status=410, code="export_expired")
    if job.status != "done":
        raise AppError(f"The export is {job.status}.", status=409, code="export_not_ready",
                       details={"status": job.status})
    path = audit_exports.job_path(audit_runtime.export_dir(current_app), current_identity.organization_id, job.id)
    if not path.is_file():
        raise AppError("The export's file expired; start a new export.", status=410, code="export_expired")
    name = f"audit-{current_identity.organization_id}-{job.id}.ndjson"
    if job.reveal_session_ids and not _reveal():
        lines = audit_exports.file_lines(path, written_revealing=True, reveal_session_ids=False)
        response = Response(lines, mimetype="application/x-ndjson",
                            headers={"Content-Disposition": f"attachment; filename={name}"})
    else:
        response = send_file(path, mimetype="application/x-ndjson", as_attachment=True, download_name=name)
    response.headers["Cache-Control"] = "no-store"
    return response
