"""What each kind of wizard step shows and does with a submitted form (the engine's step handlers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from ..causes import Cause
from ..idp import IdPPlugin, SamlMetadata, ValidationResult
from ..models import Organization, WizardProgress
from ..roles import DEFAULT_ROLE, ROLES
from ..services import fanout_jobs, role_mapping, sso_setup
from ..workos import WorkOSClient
from . import wizard

ROLE_CHOICES = ROLES
EXTRA_MAPPING_ROWS = 2


@dataclass
class StepContext:
    """Everything a step handler may use; built by the view for one request."""

    session: Session
    client: WorkOSClient
    organization: Organization
    plugin: IdPPlugin
    progress: WizardProgress
    cause: Cause
    now: datetime
    sp: sso_setup.SpValues
    fanout_chunk: int = fanout_jobs.DEFAULT_CHUNK  # HATIDATA_FANOUT_CHUNK: members the request may recompute

    @property
    def state(self) -> wizard.WizardState:
        """The current wizard state."""
        return wizard.state(self.plugin, self.progress)

    @property
    def protocol(self) -> str:
        """The protocol chosen on the first step."""
        return self.state.protocol


@dataclass
class Outcome:
    """The result of a submitted step: errors to show inline, or data to save and whether the step is done."""

    errors: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    render: dict[str, Any] = field(default_factory=dict)


Form = Mapping[str, str]
Files = Mapping[str, FileStorage]


def _confirm(form: Form, message: str) -> Outcome:
    if form.get("confirm") != "yes":
        return Outcome(errors={"confirm": message})
    return Outcome()


def handle_prerequisites(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Choose SAML or OIDC and confirm the prerequisites."""
    protocol = form.get("protocol") or ctx.protocol
    if protocol not in ctx.plugin.protocols:
        return Outcome(errors={"protocol": "Choose one of the offered protocols."})
    outcome = _confirm(form, "Confirm you have these ready.")
    if outcome.errors:
        return outcome
    if protocol != ctx.protocol:
        wizard.reset(ctx.session, ctx.plugin, ctx.progress, ctx.cause.with_reason("protocol_changed"),
                     protocol=protocol)
    outcome.details = {"protocol": protocol}
    return outcome


def handle_console(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """The admin confirms the IdP app exists."""
    return _confirm(form, f"Confirm you created the app in {ctx.plugin.display_name}.")


def handle_attributes(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Every required attribute must be ticked."""
    required = [r for r in ctx.plugin.attribute_requirements(ctx.protocol) if r.required]
    missing = [r.field for r in required if form.get(f"attr_{r.field}") != "yes"]
    if missing:
        return Outcome(errors={f"attr_{f}": "Configure this attribute, then tick it." for f in missing})
    return Outcome(data={"attributes_confirmed": [r.field for r in required]})


def _read_upload(files: Files) -> bytes | None:
    upload = files.get("metadata_file")
    if upload is None or not upload.filename:
        return None
    data: bytes = upload.read(1024 * 1024 + 1)
    return data


def handle_metadata(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Validate the metadata (or OIDC settings), then create or update the WorkOS connection."""
    existing = ctx.progress.data.get("connection_id")
    metadata_url: str | None = None
    metadata: SamlMetadata | None = None
    oidc: sso_setup.OidcSettings | None = None
    warnings: tuple[str, ...] = ()
    if ctx.protocol == "oidc":
        found = ctx.plugin.validate_oidc_discovery_url(form.get("discovery_endpoint", ""))
        client_id = form.get("client_id", "").strip()
        secret = form.get("client_secret", "")
        errors = found.messages()
        if not client_id:
            errors["client_id"] = "Enter the client ID."
        if not secret and not existing:
            errors["client_secret"] = "Enter the client secret (it goes to WorkOS, not kept here)."  # noqa: S105
        if errors:
            return Outcome(errors=errors)
        oidc = sso_setup.OidcSettings(found.value, client_id, secret)
        saved = {"source": "oidc", "discovery_endpoint": found.value, "client_id": client_id}
    else:
        source = form.get("source") or ctx.plugin.accepted_metadata_sources[0]
        if source not in ctx.plugin.accepted_metadata_sources:
            return Outcome(errors={"source": "Choose how to give the metadata."})
        result: ValidationResult
        if source == "url":
            result = ctx.plugin.validate_metadata_url(form.get("metadata_url", ""))
        else:
            data = _read_upload(files)
            if data is None:
                return Outcome(errors={"metadata_file": "Choose the metadata file to upload."})
            result = ctx.plugin.validate_metadata_xml(data, ctx.now)
        if not result.ok:
            return Outcome(errors=result.messages())
        warnings = result.warnings
        if source == "url":
            metadata_url = str(result.value)
            saved = {"source": "url", "metadata_url": metadata_url}
        else:
            metadata = result.value
            assert isinstance(metadata, SamlMetadata)
            expiry = metadata.earliest_expiry
            saved = {"source": "xml", "entity_id": metadata.entity_id, "sso_url": metadata.sso_urls[0],
                     "certificate_not_after": expiry.isoformat() if expiry else None,
                     "certificates": [c.sha256_fingerprint for c in metadata.certificates]}
    try:
        conn = sso_setup.save_connection(
            ctx.session, ctx.client, ctx.organization, ctx.plugin, ctx.protocol, ctx.sp, ctx.cause,
            existing_id=existing, metadata_url=metadata_url, metadata=metadata, oidc=oidc)
    except sso_setup.SetupError as exc:
        return Outcome(errors={"metadata_url" if metadata_url else "metadata_file" if metadata else
                               "discovery_endpoint": exc.message})
    if ctx.progress.data.get("test_login"):
        # New metadata makes an earlier test sign-in meaningless.
        wizard.reopen_from(ctx.plugin, ctx.progress, _key_of(ctx, "test_login") or ctx.progress.current_step)
    return Outcome(data={"metadata": saved, "connection_id": conn.connection_id, "metadata_warnings": list(warnings),
                         "test_login": None},
                   details={"connection_id": conn.connection_id, "created": conn.created, "source": saved["source"]})


def _key_of(ctx: StepContext, kind: str) -> str | None:
    return next((s.key for s in ctx.state.steps if s.kind == kind), None)


def mapping_rows(ctx: StepContext, form: Form | None = None) -> list[dict[str, Any]]:
    """The rows of the mapping form: submitted, else saved, else the plugin's preset (plus blank rows)."""
    if form is not None:
        rows = []
        i = 0
        while f"rows-{i}-role" in form:
            rows.append({"label": form.get(f"rows-{i}-label", "")[:255],
                         "identifier": form.get(f"rows-{i}-identifier", ""),
                         "role": form.get(f"rows-{i}-role", "")})
            i += 1
        return rows
    saved = ctx.progress.data.get("mappings")
    if saved:
        rows = [dict(r) for r in saved]
    else:
        preset = ctx.plugin.role_mapping_presets()[0]
        rows = [{"label": m.label, "identifier": m.identifier or "", "role": m.role} for m in preset.mappings]
    rows += [{"label": "", "identifier": "", "role": ""} for _ in range(EXTRA_MAPPING_ROWS)]
    return rows


def _specs(ctx: StepContext, rows: list[dict[str, Any]]) -> tuple[list[role_mapping.MappingSpec], dict[str, str]]:
    kind = ctx.plugin.role_mapping_presets()[0].identifier_kind
    specs: list[role_mapping.MappingSpec] = []
    errors: dict[str, str] = {}
    seen: set[str] = set()
    filled = [(i, r) for i, r in enumerate(rows) if r["identifier"].strip() or (r["label"].strip() and r["role"])]
    for i, row in filled:
        if row["role"] not in ROLE_CHOICES:
            errors[f"rows-{i}-role"] = "Choose a role."
            continue
        checked = ctx.plugin.validate_group_identifier(row["identifier"])
        if not checked.ok:
            errors[f"rows-{i}-identifier"] = checked.errors[0].message
            continue
        if checked.value in seen:
            errors[f"rows-{i}-identifier"] = "This group is mapped twice."
            continue
        seen.add(checked.value)
        specs.append(role_mapping.MappingSpec(kind, checked.value, row["role"], priority=len(rows) - i))
    if not filled:
        errors["rows-0-identifier"] = "Map at least one group."
    return specs, errors


def _default_role(form: Form) -> tuple[str | None, str | None]:
    value = form.get("default_role", DEFAULT_ROLE)
    if value == "none":
        return None, None
    if value not in ROLE_CHOICES:
        return None, "Choose the role of members in no mapped group."
    return value, None


def handle_role_mapping(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Preview (dry run) or save the group -> role mappings."""
    rows = mapping_rows(ctx, form)
    specs, errors = _specs(ctx, rows)
    default_role, problem = _default_role(form)
    if problem:
        errors["default_role"] = problem
    render: dict[str, Any] = {"rows": rows, "default_role": form.get("default_role", DEFAULT_ROLE)}
    if errors:
        return Outcome(errors=errors, render=render)
    lint = role_mapping.lint_specs(specs)
    if form.get("action") == "preview":
        changes = role_mapping.preview(ctx.session, organization_id=ctx.organization.id, specs=specs,
                                       default_role=default_role)
        return Outcome(complete=False, render={**render, "preview": changes, "lint": lint})
    result = role_mapping.replace_mappings(ctx.session, ctx.client, organization_id=ctx.organization.id,
                                           specs=specs, cause=ctx.cause, default_role=default_role,
                                           chunk=ctx.fanout_chunk)
    saved = [r for r in rows if r["identifier"].strip()]
    return Outcome(data={"mappings": saved, "mapping_lint": lint},
                   details={"mappings": len(specs), "roles_changed": len(result.changes)})


def handle_test_login(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """``start`` sends the browser to WorkOS; ``continue`` needs a passing test sign-in."""
    if form.get("action") == "start":
        return Outcome(complete=False, data={"login_hint": form.get("login_hint", "").strip()[:320] or None})
    result = ctx.progress.data.get("test_login")
    if not result:
        return Outcome(errors={"test_login": "Run a test sign-in first."})
    if not result.get("ok"):
        return Outcome(errors={"test_login": "The last test sign-in had problems: fix them and test again."})
    return Outcome(details={"email": result.get("email"), "role": result.get("role")})


def handle_directory(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Directory sync is set up in the IdP (and the Admin Portal); the step only records it was read."""
    return Outcome(details={"directory_type": ctx.plugin.directory_type})


def handle_activate(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Activate the connection, optionally enforcing SSO for the organization's domains."""
    enforce = form.get("enforce_sso") == "yes"
    try:
        state = sso_setup.activate(ctx.session, ctx.client, ctx.organization, ctx.plugin, enforce, ctx.cause)
    except sso_setup.SetupError as exc:
        return Outcome(errors={"activate": exc.message})
    return Outcome(data={"activated": True, "enforce_sso": enforce}, details={"state": state, "enforce_sso": enforce})


HANDLERS: dict[str, Callable[[StepContext, Form, Files], Outcome]] = {
    "prerequisites": handle_prerequisites,
    "console": handle_console,
    "attributes": handle_attributes,
    "metadata": handle_metadata,
    "role_mapping": handle_role_mapping,
    "test_login": handle_test_login,
    "directory": handle_directory,
    "activate": handle_activate,
}
