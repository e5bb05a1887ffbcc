"""The application's registered redirect URIs: where a code may be delivered and where a logout may return.

WorkOS sends a code only to a redirect URI configured for the environment and returns from a logout only to a
configured sign-out redirect. The emulator keeps both lists in ``Store.application`` (seeded, persisted, added to
through ``POST /_emulator/redirect_uris``) and, while ``loopback_redirects`` is on (the default, for development
and tests on free ports), also accepts any ``http(s)`` URI on a loopback host."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError, invalid_params
from .store import Store

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
KINDS = {"redirect": "redirect_uris", "logout": "logout_redirect_uris"}


def _is_loopback(uri: str) -> bool:
    parts = urlsplit(uri)
    return (parts.scheme in ("http", "https") and "@" not in parts.netloc
            and (parts.hostname or "") in LOOPBACK_HOSTS)


def registered(store: Store, kind: str) -> list[str]:
    """The registered URIs of *kind* (``redirect`` or ``logout``); the default sign-out redirect counts."""
    app = store.application
    uris = [str(u) for u in app.get(KINDS[kind]) or []]
    if kind == "logout" and app.get("logout_redirect_uri"):
        uris.insert(0, str(app["logout_redirect_uri"]))
    return uris


def allowed(store: Store, kind: str, uri: str) -> bool:
    """Whether *uri* is registered (exact match), or a loopback URI while ``loopback_redirects`` is on."""
    if uri in registered(store, kind):
        return True
    return bool(store.application.get("loopback_redirects", True)) and _is_loopback(uri)


def check_redirect_uri(store: Store, uri: str) -> str:
    """400 ``invalid_redirect_uri`` for a ``redirect_uri`` the application never registered: no code is sent
    there, and neither is the error (an unregistered URI is never redirected to)."""
    if not allowed(store, "redirect", uri):
        raise ApiError(400, f"redirect_uri '{uri}' is not a registered redirect URI of this application.",
                       "invalid_redirect_uri")
    return uri


def check_return_to(store: Store, uri: str) -> str:
    """422 (the logout's documented error) for a ``return_to`` outside the registered sign-out redirects."""
    if not allowed(store, "logout", uri):
        raise ApiError(422, f"return_to '{uri}' is not a registered sign-out redirect of this application.",
                       "invalid_return_to")
    return uri


def register(store: Store, kind: Any, uri: Any) -> bool:
    """Add *uri* to the registered URIs of *kind*; ``False`` when it was already there."""
    if kind not in KINDS:
        raise invalid_params(f"kind must be one of {sorted(KINDS)}.", "kind")
    parts = urlsplit(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise invalid_params("uri must be an absolute http(s) URL without a fragment.", "uri")
    if parts.scheme == "http" and not _is_loopback(uri):
        raise invalid_params("uri must be https:// (http:// only on a loopback host).", "uri")
    uris = list(store.application.get(KINDS[kind]) or [])
    if uri in uris:
        return False
    store.application = {**store.application, KINDS[kind]: [*uris, uri]}
    return True
