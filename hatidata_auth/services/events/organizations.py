"""``organization.updated|deleted``: the tenant's name, domains and status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ...models import Membership
from ..domains import domain_states
from .context import EventContext, find_organization, parse_time, require, resolve_organization
from .member_fanout import fan_out
from .registry import handles


@handles("organization.updated", revokes=False)
def on_organization_updated(ctx: EventContext, data: dict[str, Any]) -> None:
    """``organization.updated``: name and domains (version-guarded by ``updated_at``)."""
    require(data, "id", "name")
    org = find_organization(ctx.session, data["id"])
    if org is None:
        resolve_organization(ctx, data["id"])
        return
    version = parse_time(data.get("updated_at")) or ctx.event_time
    if org.workos_updated_at is not None and version < org.workos_updated_at:
        return
    if org.status == "deleted":
        ctx.ignore("organization deleted")
        return
    domains = sorted(str(d.get("domain") if isinstance(d, dict) else d) for d in data.get("domains") or [])
    changed = {}
    if org.name != data["name"]:
        changed["name"] = [org.name, data["name"]]
        org.name = data["name"]
    if "domains" in data and org.domains != domains:
        changed["domains"] = [org.domains, domains]
        org.domains = domains
    states = domain_states(data.get("domains"))
    if "domains" in data and (org.domain_states or {}) != states:
        changed["domain_states"] = [org.domain_states, states]
        org.domain_states = states
    org.workos_updated_at = version
    if changed:
        ctx.record("organization.updated", organization_id=org.id, target_type="organization", target_id=org.id,
                   details={"changed": changed})


@handles("organization.deleted", revokes=True)
def on_organization_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``organization.deleted``: the tenant loses all access (its members deprovisioned a chunk at a time when they
    are more than one: :func:`~.member_fanout.fan_out`)."""
    require(data, "id")
    org = find_organization(ctx.session, data["id"])
    if org is None:
        ctx.ignore("unknown organization")
        return
    if org.status == "deleted":
        return
    org.status = "deleted"
    org.deleted_at = ctx.event_time
    active = int(ctx.session.scalar(select(func.count()).select_from(Membership).where(
        Membership.organization_id == org.id, Membership.status == "active")) or 0)
    ctx.record("organization.deleted", organization_id=org.id, target_type="organization", target_id=org.id,
               details={"memberships_deprovisioned": active})
    fan_out(ctx, org, "organization", reason="organization_deleted")
