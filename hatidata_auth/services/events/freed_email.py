"""The internal handler of ``services.freed_email_jobs.JOB_TYPE``: a directory user that was waiting for an email
its organization's other directory user freed is brought in line (``sync_member``, reason ``email_freed``) in a
transaction of its own, under its own entity key (the rule in :mod:`services.freed_email_jobs`)."""

from __future__ import annotations

from typing import Any

from ...models import Organization
from .. import freed_email_jobs
from .context import EventContext, PayloadError
from .directory_state import locked_directory_user, sync_member


def apply_freed_email(ctx: EventContext, data: dict[str, Any]) -> None:
    """Sync the job's directory user, its row locked, unless it no longer waits for the email: the organization
    or the directory user is gone (or deleted), or its email has changed since (its own event has synced it);
    those are ignored with a note saying which. Raises :class:`PayloadError` on a payload of another shape."""
    try:
        job = freed_email_jobs.parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"not a freed-email job: {exc}") from exc
    org = ctx.session.get(Organization, job.organization_id)
    ctx.organization = org
    if org is None:
        ctx.ignore("unknown organization")
        return
    du = locked_directory_user(ctx, org, job.directory_user_id)
    if du is None or du.deleted_at is not None:
        ctx.ignore(f"directory user {job.directory_user_id} gone")
        return
    if du.email != job.email:
        ctx.ignore(f"directory user {job.directory_user_id} no longer has the freed email")
        return
    sync_member(ctx, org, du, reason=freed_email_jobs.REASON)
