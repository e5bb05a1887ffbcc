"""What each kind of wizard step shows and does with a submitted form (the engine's step handlers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..idp import SamlMetadata, ValidationResult
from ..services import sso_enforcement, sso_setup
from ..services.organizations import CREATED_CONNECTIONS
from . import wizard
from .mapping_step import ROLE_CHOICES, handle_role_mapping, mapping_rows
from .step_context import Files, Form, Outcome, StepContext

#: The metadata step's field labels, as the template shows them (an error names its field by its label).
FIELD_LABELS = {"metadata_url": "Metadata URL", "metadata_file": "Metadata file (XML)",
                "discovery_endpoint": "Discovery URL"}

__all__ = ["HANDLERS", "ROLE_CHOICES", "Files", "Form", "Outcome", "StepContext", "mapping_rows"]


def _confirm(form: Form, message: str) -> Outcome:
    if form.get("confirm") != "yes":
        return Outcome(errors={"confirm": message})
    return Outcome()


def handle_prerequisites(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Choose SAML or OIDC and confirm the prerequisites."""
    protocol = form.get("protocol") or ctx.protocol
    if protocol not in ctx.plugin.protocols:
        return Outcome(errors={"protocol": "Choose one of the offered protocols."})
    outcome = _confirm(form, "Tick “I have these ready” to go on.")
    if outcome.errors:
        return outcome
    if protocol != ctx.protocol:
        wizard.reset(ctx.session, ctx.plugin, ctx.progress, ctx.cause.with_reason("protocol_changed"),
                     protocol=protocol)
    outcome.details = {"protocol": protocol}
    return outcome


def handle_console(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """The admin confirms the IdP app exists."""
    return _confirm(form, f"Tick “I created the app in {ctx.plugin.display_name}” to go on.")


def handle_attributes(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Every required attribute must be ticked."""
    required = [r for r in ctx.plugin.attribute_requirements(ctx.protocol) if r.required]
    missing = [r for r in required if form.get(f"attr_{r.field}") != "yes"]
    if missing:
        return Outcome(errors={f"attr_{r.field}": f"Tick “{r.field} configured” once {ctx.plugin.display_name} "
                                                  f"sends {r.idp_attribute or 'NameID'}." for r in missing})
    return Outcome(data={"attributes_confirmed": [r.field for r in required]})


def _read_upload(files: Files) -> bytes | None:
    upload = files.get("metadata_file")
    if upload is None or not upload.filename:
        return None
    data: bytes = upload.read(1024 * 1024 + 1)
    return data


def _existing_id(ctx: StepContext, form: Form) -> str | None:
    """The connection this submit updates: the wizard's own, else the organization's offered one unless the admin
    chose a new connection."""
    stored = ctx.progress.data.get("connection_id")
    if stored:
        return str(stored)
    if ctx.connection.offered_id and form.get("connection_choice", "existing") != "new":
        return ctx.connection.offered_id
    return None


def _oidc(ctx: StepContext, form: Form, existing: str | None) -> tuple[sso_setup.OidcSettings | None,
                                                                        dict[str, Any], dict[str, str]]:
    found = ctx.plugin.validate_oidc_discovery_url(form.get("discovery_endpoint", ""))
    client_id = form.get("client_id", "").strip()
    secret = form.get("client_secret", "")
    errors = found.messages()
    if not client_id:
        errors["client_id"] = "Client ID: enter the client ID."
    if not secret and not existing:
        errors["client_secret"] = "Client secret: enter it (it goes to WorkOS, not kept here)."  # noqa: S105
    if errors:
        return None, {}, errors
    saved = {"source": "oidc", "discovery_endpoint": found.value, "client_id": client_id}
    return sso_setup.OidcSettings(found.value, client_id, secret), saved, {}


def _source(ctx: StepContext, form: Form, files: Files) -> str:
    """The chosen metadata source; when its input is empty but the other one was given, the one given."""
    sources = ctx.plugin.accepted_metadata_sources
    source = form.get("source") or sources[0]
    has_file = bool(files.get("metadata_file") and files["metadata_file"].filename)
    has_url = bool(form.get("metadata_url", "").strip())
    if source == "url" and not has_url and has_file and "xml" in sources:
        return "xml"
    if source == "xml" and not has_file and has_url and "url" in sources:
        return "url"
    return source


def _saml(ctx: StepContext, form: Form, files: Files) -> tuple[ValidationResult | None, str, dict[str, str]]:
    source = _source(ctx, form, files)
    if source not in ctx.plugin.accepted_metadata_sources:
        return None, source, {"source": "Metadata: choose how to give it."}
    if source == "url":
        result = ctx.plugin.validate_metadata_url(form.get("metadata_url", ""))
    else:
        data = _read_upload(files)
        if data is None:
            return None, source, {"metadata_file": "Metadata file (XML): choose the file to upload."}
        result = ctx.plugin.validate_metadata_xml(data, ctx.now)
    return result, source, ({} if result.ok else result.messages())


def _saml_saved(source: str, result: ValidationResult) -> tuple[str | None, SamlMetadata | None, dict[str, Any]]:
    if source == "url":
        return str(result.value), None, {"source": "url", "metadata_url": str(result.value)}
    metadata = result.value
    assert isinstance(metadata, SamlMetadata)
    expiry = metadata.earliest_expiry
    return None, metadata, {"source": "xml", "entity_id": metadata.entity_id, "sso_url": metadata.sso_urls[0],
                            "certificate_not_after": expiry.isoformat() if expiry else None,
                            "certificates": [c.sha256_fingerprint for c in metadata.certificates]}


def _metadata_failed(ctx: StepContext, form: Form, errors: dict[str, str],
                     render: dict[str, Any] | None = None) -> Outcome:
    render = dict(render or {})
    if ctx.protocol == "oidc" and form.get("client_secret"):
        # The secret is never sent back to the browser: say so, so the admin knows to enter it again.
        render["secret_cleared"] = True
    return Outcome(errors=errors, render=render)


def handle_metadata(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Validate the metadata (or OIDC settings), then create or update the WorkOS connection.

    Warnings from the validation are shown on the submit that produced them; the connection is saved once the
    admin ticks that they checked them.
    """
    existing = _existing_id(ctx, form)
    metadata_url: str | None = None
    metadata: SamlMetadata | None = None
    oidc: sso_setup.OidcSettings | None = None
    warnings: tuple[str, ...] = ()
    saved: dict[str, Any] = {}
    if ctx.protocol == "oidc":
        oidc, saved, errors = _oidc(ctx, form, existing)
    else:
        result, source, errors = _saml(ctx, form, files)
        if not errors and result is not None:
            warnings = result.warnings
            metadata_url, metadata, saved = _saml_saved(source, result)
    if errors:
        return _metadata_failed(ctx, form, errors)
    if warnings and form.get("accept_warnings") != "yes":
        return _metadata_failed(ctx, form, {"accept_warnings": "Read the warning about this metadata, then tick "
                                                               "“I checked: use it anyway” (or fix it)."},
                                {"pending_warnings": list(warnings)})
    # Two submits at once take turns; the second re-reads the wizard and updates the first's connection.
    wizard.lock(ctx.session, ctx.progress)
    existing = _existing_id(ctx, form)
    try:
        conn = sso_setup.save_connection(
            ctx.session, ctx.client, ctx.organization, ctx.plugin, ctx.protocol, ctx.sp, ctx.cause,
            existing_id=existing, metadata_url=metadata_url, metadata=metadata, oidc=oidc)
    except sso_setup.SetupError as exc:
        field = "metadata_url" if metadata_url else "metadata_file" if metadata else "discovery_endpoint"
        return _metadata_failed(ctx, form, {field: f"{FIELD_LABELS[field]}: {exc.message}"})
    if ctx.progress.data.get("test_login"):
        # New metadata makes an earlier test sign-in meaningless.
        wizard.reopen_from(ctx.plugin, ctx.progress, _key_of(ctx, "test_login") or ctx.progress.current_step)
    created = list(ctx.progress.data.get(CREATED_CONNECTIONS) or [])
    if conn.created:
        created.append(conn.connection_id)
    return Outcome(data={"metadata": saved, "connection_id": conn.connection_id, "metadata_warnings": list(warnings),
                         "test_login": None, "connection_gone": None, CREATED_CONNECTIONS: created or None},
                   details={"connection_id": conn.connection_id, "created": conn.created, "source": saved["source"],
                            "edited_existing": existing == ctx.organization.connection_id and existing is not None})


def _key_of(ctx: StepContext, kind: str) -> str | None:
    return next((s.key for s in ctx.state.steps if s.kind == kind), None)


def handle_test_login(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """``start`` sends the browser to WorkOS; ``continue`` needs a passing test sign-in."""
    if form.get("action") == "start":
        return Outcome(complete=False, data={"login_hint": form.get("login_hint", "").strip()[:320] or None})
    result = ctx.progress.data.get("test_login")
    if not result:
        return Outcome(errors={"test_login": "Test sign-in: run one first."})
    if not result.get("ok"):
        return Outcome(errors={"test_login": "Test sign-in: the last one had problems; fix them and test again."})
    return Outcome(details={"email": result.get("email"), "role": result.get("role")})


def handle_directory(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Directory sync is set up in the IdP (and the Admin Portal); the step only records it was read."""
    return Outcome(details={"directory_type": ctx.plugin.directory_type})


def handle_activate(ctx: StepContext, form: Form, files: Files) -> Outcome:
    """Activate the connection, optionally enforcing SSO for the organization's domains."""
    enforce = form.get("enforce_sso") == "yes"
    connection_id = ctx.progress.data.get("connection_id")
    tested = ctx.progress.data.get("test_login") or {}
    passed = bool(tested.get("ok")) and tested.get("connection_id") == connection_id
    try:
        state = sso_setup.activate(ctx.session, ctx.client, ctx.organization, ctx.plugin, connection_id, passed,
                                   enforce, ctx.cause)
    except (sso_setup.SetupError, sso_enforcement.EnforcementUnverified) as exc:
        return Outcome(errors={"activate": f"Activate: {exc.message}"})
    return Outcome(data={"activated": True, "enforce_sso": enforce}, details={"state": state, "enforce_sso": enforce})


Handler = Callable[[StepContext, Form, Files], Outcome]


def _locked(handler: Handler) -> Handler:
    """Every step submit holds the wizard's progress row first (``wizard.lock``), before anything it audits: the
    order every writer of the row takes its locks in, so two submits never wait for each other in a circle."""
    def run(ctx: StepContext, form: Form, files: Files) -> Outcome:
        wizard.lock(ctx.session, ctx.progress)
        return handler(ctx, form, files)

    run.__doc__ = handler.__doc__
    return run


HANDLERS: dict[str, Handler] = {kind: _locked(handler) for kind, handler in {
    "prerequisites": handle_prerequisites,
    "console": handle_console,
    "attributes": handle_attributes,
    "metadata": handle_metadata,
    "role_mapping": handle_role_mapping,
    "test_login": handle_test_login,
    "directory": handle_directory,
    "activate": handle_activate,
}.items()}
