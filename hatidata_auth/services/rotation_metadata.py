"""The new metadata of a certificate rotation, as the admin gives it (an uploaded file or an https URL), checked by
the organization's IdP plugin: shared by the rotation pages and the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..idp import IdPPlugin, PluginRegistry, SamlMetadata
from ..models import Organization
from . import metadata_fetch
from .cert_rotation import RotationError

MAX_BYTES = metadata_fetch.MAX_BYTES


def plugin_for(registry: PluginRegistry, organization: Organization) -> IdPPlugin | None:
    """The organization's plugin: the one its setup activated, else the one whose WorkOS connection type it has."""
    found = registry.get(organization.idp_plugin or "")
    if found is None and organization.connection_type:
        found = next((p for p in registry if organization.connection_type in p.connection_types.values()), None)
    return found


def _refused(message: str, field: str) -> RotationError:
    return RotationError(message, status=422, code="invalid_metadata", details={"fields": {field: [message]}})


def read(plugin: IdPPlugin | None, *, xml: bytes | None, url: str | None, now: datetime,
         fetch: Callable[[str], bytes] = metadata_fetch.fetch,
         xml_field: str = "metadata_file") -> tuple[SamlMetadata, str]:
    """``(metadata, source)`` from *xml* (a file's bytes, at most :data:`MAX_BYTES`) or else *url* (checked by the
    plugin, then fetched by :func:`metadata_fetch.fetch`); source ``xml`` or ``url``.

    *xml_field* is the name under which the caller received *xml* (the pages' upload ``metadata_file``, the API's
    ``metadata_xml``): errors are reported under the field the caller used.

    Raises :class:`RotationError` 422 ``invalid_metadata`` whose ``details.fields`` names *xml_field* /
    ``metadata_url`` (nothing given, too large, refused by the plugin, unreachable or private URL), 409
    ``no_plugin`` when the organization's IdP is not known.
    """
    if plugin is None:
        raise RotationError("This organization's identity provider is not known.", code="no_plugin")
    if xml:
        data, source, field = xml, "xml", xml_field
        if len(data) > MAX_BYTES:
            raise _refused(f"The metadata file is larger than {MAX_BYTES // 1024} KiB.", field)
    elif url:
        source, field = "url", "metadata_url"
        checked = plugin.validate_metadata_url(url)
        if not checked.ok:
            raise _refused(next(iter(checked.messages().values())), field)
        try:
            data = fetch(str(checked.value))
        except metadata_fetch.MetadataFetchError as exc:
            raise _refused(exc.message, field) from exc
    else:
        raise _refused("Upload the new metadata file or give its URL.", xml_field)
    result = plugin.validate_metadata_xml(data, now)
    if not result.ok or not isinstance(result.value, SamlMetadata):
        raise _refused(next(iter(result.messages().values()), "The metadata is not valid."), field)
    return result.value, source
