"""Which identity provider serves a host, from the host patterns plugin classes declare (``IdPPlugin.idp_hosts``).

The core knows no IdP by name: every plugin class that declares ``idp_hosts`` adds itself to the catalog when it
is defined, so "this is an Entra URL, not Okta's" works for any plugin, built-in or external.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .values import ValidationResult

_CATALOG: list[tuple[str, tuple[re.Pattern[str], ...]]] = []


def host_patterns_problem(patterns: Iterable[object]) -> str | None:
    """Why *patterns* are not a tuple of regular expressions, or ``None``."""
    for pattern in patterns:
        if not isinstance(pattern, str):
            return f"idp_hosts must hold regular expressions as strings, not {pattern!r}"
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"idp_hosts pattern {pattern!r} is not a regular expression: {exc}"
    return None


def register_hosts(display_name: str, patterns: Iterable[str]) -> None:
    """Remember that hosts matching any of *patterns* (searched in the lower-cased host) belong to *display_name*."""
    compiled = tuple(re.compile(p) for p in patterns)
    if compiled and (display_name, compiled) not in _CATALOG:
        _CATALOG.append((display_name, compiled))


def guess_idp(host: str) -> str | None:
    """The display name of the known IdP serving *host*, if any (to say "this is an Entra URL, not Okta's")."""
    lowered = host.lower()
    for display_name, patterns in _CATALOG:
        if any(p.search(lowered) for p in patterns):
            return display_name
    return None


#: What the wizard's label calls each URL field: a message names the field as its label does.
URL_FIELD_LABELS = {"metadata_url": "metadata URL", "discovery_endpoint": "discovery URL"}


def url_label(field: str) -> str:
    """How messages name the URL field *field* (its label, lower-cased as mid-sentence)."""
    return URL_FIELD_LABELS.get(field, "URL")


def wrong_idp(field: str, host: str, expected: str) -> ValidationResult | None:
    """A failure on *field* when *host* belongs to another known IdP than *expected* (a display name)."""
    other = guess_idp(host)
    if other and other != expected:
        return ValidationResult.failure(
            field, f"This is a {other} URL, not {expected}'s: choose {other} as your identity provider, "
                   f"or paste the {expected} {url_label(field)}.")
    return None
