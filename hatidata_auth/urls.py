"""Absolute URLs of this service: built from ``HATIDATA_PUBLIC_URL`` only, never from the request's ``Host``.

A forged ``Host`` (or ``X-Forwarded-Host``) header must not be able to steer a redirect URI, a logout return
URL or an Admin Portal return URL to another origin. ``HATIDATA_PUBLIC_URL`` is the service's external origin
plus its mount prefix, if any (``https://auth.example.com`` or ``https://example.com/auth-service``); production
refuses to start without it, development and testing default to ``http://127.0.0.1:$PORT``.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, request, url_for

SETTING = "HATIDATA_PUBLIC_URL"


def public_base() -> str:
    """The configured external base URL, without a trailing slash; ``RuntimeError`` when it is not set."""
    configured = str(current_app.config.get(SETTING) or "").rstrip("/")
    if not configured:
        raise RuntimeError(f"{SETTING} is not set: absolute URLs are never taken from the Host header")
    return configured


def external_url(endpoint: str, **values: Any) -> str:
    """``url_for(endpoint, **values)`` on the configured base URL (the mount prefix comes from the setting)."""
    path = url_for(endpoint, **values)
    root = request.script_root if has_request_context() else ""
    if root and path.startswith(root):
        path = path[len(root):]
    return public_base() + path
