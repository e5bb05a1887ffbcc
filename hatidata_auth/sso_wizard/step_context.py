"""What a step handler receives (:class:`StepContext`) and returns (:class:`Outcome`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from ..causes import Cause
from ..idp import IdPPlugin
from ..models import Organization, WizardProgress
from ..services import fanout_jobs, sso_setup
from ..workos import WorkOSClient
from . import wizard
from .recovery import ConnectionCheck


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
    #: The wizard's connection as WorkOS saw it on this visit (:func:`.recovery.reconcile`).
    connection: ConnectionCheck = field(default_factory=lambda: ConnectionCheck("none"))
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
