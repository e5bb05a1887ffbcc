"""The one place that builds the WorkOS client: every WorkOS call in the app goes through it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workos import WorkOSClient

from .errors import translate_errors
from .transport import InstrumentedBackend, instrumented_backend

WORKOS_DEFAULTS: Mapping[str, Any] = {
    "WORKOS_TIMEOUT": 10.0,
    "WORKOS_MAX_RETRIES": 2,
    "WORKOS_JWT_LEEWAY": 5.0,
    "WORKOS_WEBHOOK_TOLERANCE": 180,
}
"""The client's setting defaults; part of ``hatidata_auth.config.DEFAULTS`` (this layer cannot import it)."""


@dataclass(frozen=True, slots=True)
class WorkOSSettings:
    """What the client needs, read from the app's configuration."""

    api_key: str
    client_id: str
    base_url: str | None
    timeout: float
    max_retries: int
    jwt_leeway: float
    webhook_secret: str | None
    webhook_tolerance: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WorkOSSettings:
        """Read the ``WORKOS_*`` settings from a Flask config mapping."""
        return cls(
            api_key=str(config["WORKOS_API_KEY"] or ""),
            client_id=str(config["WORKOS_CLIENT_ID"] or ""),
            base_url=config.get("WORKOS_BASE_URL") or None,
            timeout=float(config.get("WORKOS_TIMEOUT", WORKOS_DEFAULTS["WORKOS_TIMEOUT"])),
            max_retries=int(config.get("WORKOS_MAX_RETRIES", WORKOS_DEFAULTS["WORKOS_MAX_RETRIES"])),
            jwt_leeway=float(config.get("WORKOS_JWT_LEEWAY", WORKOS_DEFAULTS["WORKOS_JWT_LEEWAY"])),
            webhook_secret=config.get("WORKOS_WEBHOOK_SECRET") or None,
            webhook_tolerance=int(config.get("WORKOS_WEBHOOK_TOLERANCE", WORKOS_DEFAULTS["WORKOS_WEBHOOK_TOLERANCE"])),
        )


class WorkOSGateway:
    """Owns the process's :class:`WorkOSClient`, built lazily from settings and reused.

    Services receive the gateway (or its ``client``) through their constructor; nothing else constructs
    a ``WorkOSClient``.
    """

    def __init__(self, settings: WorkOSSettings) -> None:
        self.settings = settings
        self._client: WorkOSClient | None = None
        self._backend: InstrumentedBackend | None = None
        self.tracer: Any = None
        """The app's tracer when traces are on (``hatidata_auth.tracing``): set before the client is built."""

    @property
    def client(self) -> WorkOSClient:
        """The shared SDK client (one per process)."""
        if self._client is None:
            self._backend = instrumented_backend(float(int(self.settings.timeout)), self.tracer)
            self._client = WorkOSClient(
                http_client=self._backend,
                api_key=self.settings.api_key,
                client_id=self.settings.client_id,
                base_url=self.settings.base_url,
                request_timeout=int(self.settings.timeout),
                max_retries=self.settings.max_retries,
                jwt_leeway=self.settings.jwt_leeway,
            )
        return self._client

    @property
    def base_url(self) -> str:
        """The WorkOS API base URL the client talks to, ending with ``/``."""
        return str(self.client.base_url)

    @translate_errors()
    def ping(self, *, timeout: float = 3.0) -> None:
        """Make one cheap authenticated call, not retried, within *timeout* seconds; raises
        :class:`WorkOSFailure` (``WorkOSUnavailable`` when WorkOS is unreachable or slow)."""
        self.client.organizations.list_organizations(limit=1,
                                                     request_options={"max_retries": 0, "timeout": timeout})

    def close(self) -> None:
        """Close the HTTP client, if one was built."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._backend is not None:  # passed in, so the SDK does not close it
            self._backend.close()
            self._backend = None
