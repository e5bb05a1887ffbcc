"""The role-mapping step: rows picked from the synced groups (or typed when none are synced), preview and save."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..roles import DEFAULT_ROLE, ROLES
from ..services import last_admin, role_mapping
from . import groups
from .step_context import Files, Form, Outcome, StepContext

ROLE_CHOICES = ROLES
EXTRA_MAPPING_ROWS = 2


def synced(ctx: StepContext) -> tuple[groups.SyncedGroup, ...]:
    """The organization's synced groups, identified as the plugin's SSO groups are."""
    kind = ctx.plugin.role_mapping_presets()[0].identifier_kind
    return groups.synced_groups(ctx.session, ctx.organization.id, kind)


def _submitted(form: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    i = 0
    while f"rows-{i}-role" in form:
        # A group picked from the list wins over a typed identifier.
        picked = form.get(f"rows-{i}-group", "").strip()
        rows.append({"label": form.get(f"rows-{i}-label", "")[:255],
                     "identifier": picked or form.get(f"rows-{i}-identifier", ""),
                     "role": form.get(f"rows-{i}-role", "")})
        i += 1
    return rows


def mapping_rows(ctx: StepContext, form: Form | None = None) -> list[dict[str, Any]]:
    """The rows of the mapping form: submitted, else saved, else the plugin's preset resolved against the synced
    groups (plus blank rows)."""
    if form is not None:
        return _submitted(form)
    saved = ctx.progress.data.get("mappings")
    preset = ctx.plugin.role_mapping_presets()[0]
    rows = [dict(r) for r in saved] if saved else groups.preset_rows(preset, synced(ctx))
    rows += [{"label": "", "identifier": "", "role": ""} for _ in range(EXTRA_MAPPING_ROWS)]
    return rows


def _specs(ctx: StepContext, rows: list[dict[str, Any]]) -> tuple[list[role_mapping.MappingSpec], dict[str, str]]:
    kind = ctx.plugin.role_mapping_presets()[0].identifier_kind
    specs: list[role_mapping.MappingSpec] = []
    errors: dict[str, str] = {}
    seen: set[str] = set()
    filled = [(i, r) for i, r in enumerate(rows) if r["identifier"].strip() or (r["label"].strip() and r["role"])]
    for i, row in filled:
        name = row["label"].strip() or row["identifier"].strip() or f"row {i + 1}"
        if row["role"] not in ROLE_CHOICES:
            errors[f"rows-{i}-role"] = f"Role of {name}: choose one."
            continue
        checked = ctx.plugin.validate_group_identifier(row["identifier"])
        if not checked.ok:
            errors[f"rows-{i}-identifier"] = f"Group of {name}: {checked.errors[0].message}"
            continue
        if checked.value in seen:
            errors[f"rows-{i}-identifier"] = f"Group of {name}: this group is mapped twice."
            continue
        seen.add(checked.value)
        specs.append(role_mapping.MappingSpec(kind, checked.value, row["role"], priority=len(rows) - i))
    if not filled:
        errors["rows-0-identifier"] = "Group of row 1: map at least one group."
    return specs, errors


def _default_role(form: Form) -> tuple[str | None, str | None]:
    value = form.get("default_role", DEFAULT_ROLE)
    if value == "none":
        return None, None
    if value not in ROLE_CHOICES:
        return None, "Role of members in no mapped group: choose one."
    return value, None


def _unmatched_errors(rows: list[dict[str, Any]], specs: list[role_mapping.MappingSpec],
                      found: tuple[groups.SyncedGroup, ...]) -> tuple[dict[str, str], list[str]]:
    flagged = groups.unmatched([s.group_identifier for s in specs], found)
    errors = {}
    for i, row in enumerate(rows):
        identifier = row["identifier"].strip()
        message = flagged.get(identifier) or flagged.get(identifier.lower())
        if message:
            errors[f"rows-{i}-identifier"] = message
    return errors, list(flagged.values())


def handle_role_mapping(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Preview (dry run) or save the group -> role mappings; identifiers matching no synced group need a tick."""
    rows = mapping_rows(ctx, form)
    specs, errors = _specs(ctx, rows)
    default_role, problem = _default_role(form)
    if problem:
        errors["default_role"] = problem
    found = synced(ctx)
    # An empty submit still shows rows to fill in (the error summary links to the first one).
    shown = rows or [{"label": "", "identifier": "", "role": ""} for _ in range(EXTRA_MAPPING_ROWS)]
    render: dict[str, Any] = {"rows": shown, "default_role": form.get("default_role", DEFAULT_ROLE)}
    if errors:
        return Outcome(errors=errors, render=render)
    row_flags, flagged = _unmatched_errors(rows, specs, found)
    render["unmatched"] = flagged
    lint = role_mapping.lint_specs(specs)
    if form.get("action") == "preview":
        changes = role_mapping.preview(ctx.session, organization_id=ctx.organization.id, specs=specs,
                                       default_role=default_role)
        return Outcome(complete=False, render={**render, "preview": changes, "lint": lint})
    if flagged and form.get("accept_unmatched") != "yes":
        row_flags["accept_unmatched"] = ("Pick a synced group for each flagged row, or tick “Keep groups that "
                                         "match no synced group”.")
        return Outcome(errors=row_flags, render=render)
    try:
        result = role_mapping.replace_mappings(ctx.session, ctx.client, organization_id=ctx.organization.id,
                                               specs=specs, cause=ctx.cause, default_role=default_role,
                                               chunk=ctx.fanout_chunk)
    except last_admin.LastAdmin as refused:
        return Outcome(errors={"rows": f"Role mapping: {refused.message}"}, render=render)
    saved = [r for r in rows if r["identifier"].strip()]
    return Outcome(data={"mappings": saved, "mapping_lint": lint},
                   details={"mappings": len(specs), "roles_changed": len(result.changes),
                            "unmatched": len(flagged)})
