"""Contract checks against WorkOS's published OpenAPI spec.

The contract is spec 0.61.0, vendored in ``tests/support/workos-openapi/`` with its MIT licence (no network
needed); npm only publishes ``@workos/openapi-spec@0.1.0``, which is still fetched (``npm pack``, pinned,
cached) for the operations listed in :data:`LEGACY_OPERATIONS` that 0.61.0 lacks (none today).

Public API
----------
* :func:`vendored_spec` -- path of the vendored 0.61.0 YAML, checked against :data:`VENDORED_SPEC_SHA256`.
* :func:`ensure_spec` -- path of the npm 0.1.0 spec YAML; fetched with ``npm pack`` into ``<repo>/.cache`` on
  first use and verified against pinned hashes.
* :class:`OpenAPIContract` -- ``load(path)``, ``match(method, url_path)``,
  ``validate(method, url_path, status, body)``; raises :class:`ContractViolation` (an ``AssertionError``).
* :class:`RecordingHTTPClient` -- an ``httpx2.Client`` to pass as ``WorkOSClient(http_client=...)``; it
  records every exchange as an :class:`Exchange`; ``assert_all_valid(contract)`` checks them all.
* pytest fixtures ``openapi_contract`` (0.61.0 + supplements, session), ``legacy_openapi_contract`` (npm 0.1.0,
  session) and ``recording_http_client`` (function); enable them with
  ``pytest_plugins = ["tests.support.openapi"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx2
import jsonschema
import pytest
import yaml
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = [
    "DEFAULT_CACHE_DIR",
    "LEGACY_OPERATIONS",
    "SDK_ONLY_OPERATIONS",
    "SPEC_MEMBER",
    "SPEC_PACKAGE",
    "SPEC_SHA256",
    "SPEC_VERSION",
    "TARBALL_INTEGRITY",
    "TARBALL_SHA256",
    "VENDORED_SPEC",
    "VENDORED_SPEC_SHA256",
    "VENDORED_SPEC_VERSION",
    "ContractViolation",
    "Exchange",
    "OpenAPIContract",
    "RecordingHTTPClient",
    "SpecFetchError",
    "SpecIntegrityError",
    "ensure_spec",
    "extract_spec",
    "legacy_openapi_contract",
    "load_contract",
    "openapi_contract",
    "recording_http_client",
    "vendored_spec",
    "verify_tarball",
]

# ----------------------------------------------------------------------------------------------------
# Pinned spec
# ----------------------------------------------------------------------------------------------------

SPEC_PACKAGE = "@workos/openapi-spec"
SPEC_VERSION = "0.1.0"
SPEC_MEMBER = "package/open-api-spec.yaml"
#: ``npm view @workos/openapi-spec@0.1.0 dist.integrity`` (SRI of the registry tarball).
TARBALL_INTEGRITY = "sha512-pVw8SPFsva6UR8Z2ovE1DC4Aq1fRdPXywT8JP7yN1G8Y02+/kDb6KgFXmpKiv76XinUXDOAmU9tr/G73UI8mHw=="
#: sha256 of the same tarball (``workos-openapi-spec-0.1.0.tgz``, 155758 bytes).
TARBALL_SHA256 = "5065527c6c2eabcd85bf1285c77b4472b6490db8b3624576e482384abba25e79"
#: sha256 of ``package/open-api-spec.yaml`` inside it (1150844 bytes); re-checked on every cache hit.
SPEC_SHA256 = "22485f544a15c974ef9661962703cd544dcfa51c7edde1940f4c4f6d0a93e466"
_MAX_SPEC_BYTES = 32 * 1024 * 1024

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "openapi" / f"workos-openapi-spec-{SPEC_VERSION}"
_SPEC_FILENAME = "open-api-spec.yaml"
_NPM_TIMEOUT_S = 180

VENDORED_SPEC_VERSION = "0.61.0"
#: WorkOS's OpenAPI spec 0.61.0 (MIT, ``LICENSE.txt`` beside it), vendored so that CI needs no network.
VENDORED_SPEC = REPO_ROOT / "tests" / "support" / "workos-openapi" / f"open-api-spec-{VENDORED_SPEC_VERSION}.yaml"
VENDORED_SPEC_SHA256 = "c9420d984c7da98316220445d45a446f64e159f99b1c9b477dfce5a0893f8d1b"
#: Operations taken from the npm 0.1.0 spec because 0.61.0 lacks them. Empty: 0.61.0 documents every
#: operation 0.1.0 does (checked by ``tests/support/test_openapi_contract.py``); add ``(METHOD, template)``
#: pairs here if a future vendored spec drops one the emulator serves.
LEGACY_OPERATIONS: tuple[tuple[str, str], ...] = ()


class SpecFetchError(RuntimeError):
    """The pinned spec could not be fetched (npm missing, network, registry error...)."""


class SpecIntegrityError(SpecFetchError):
    """A tarball or spec file does not match the pinned hashes."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_tarball(tarball: Path, *, integrity: str = TARBALL_INTEGRITY, sha256: str | None = TARBALL_SHA256) -> None:
    """Raise :class:`SpecIntegrityError` unless ``tarball`` matches the pinned SRI ``integrity``/sha256."""
    algo, _, expected_b64 = integrity.partition("-")
    if algo not in {"sha512", "sha384", "sha256"} or not expected_b64:
        raise SpecIntegrityError(f"unsupported integrity string {integrity!r}")
    data = Path(tarball).read_bytes()
    actual_b64 = base64.b64encode(hashlib.new(algo, data).digest()).decode("ascii")
    if actual_b64 != expected_b64:
        raise SpecIntegrityError(
            f"{tarball} does not match the pinned integrity of {SPEC_PACKAGE}@{SPEC_VERSION}: "
            f"expected {integrity}, got {algo}-{actual_b64}; refusing to use it"
        )
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise SpecIntegrityError(f"{tarball}: sha256 mismatch (expected {sha256}); refusing to use it")


def extract_spec(
    tarball: Path,
    dest: Path,
    *,
    integrity: str = TARBALL_INTEGRITY,
    tarball_sha256: str | None = TARBALL_SHA256,
    spec_sha256: str | None = SPEC_SHA256,
) -> Path:
    """Verify ``tarball`` and atomically write its ``package/open-api-spec.yaml`` member to ``dest``.

    Only that one member is read (never ``extractall``); it must be a regular file. The content is
    written to a temporary file next to ``dest`` and renamed into place, so concurrent callers never see
    a partial file.
    """
    verify_tarball(tarball, integrity=integrity, sha256=tarball_sha256)
    with tarfile.open(tarball, mode="r:gz") as tar:
        try:
            member = tar.getmember(SPEC_MEMBER)
        except KeyError:
            raise SpecFetchError(f"{tarball} has no member {SPEC_MEMBER}") from None
        if not member.isfile() or member.size > _MAX_SPEC_BYTES:
            raise SpecIntegrityError(f"{SPEC_MEMBER} in {tarball} is not a regular file of sane size")
        src = tar.extractfile(member)
        if src is None:  # pragma: no cover - isfile() guarantees a file object
            raise SpecFetchError(f"cannot read {SPEC_MEMBER} from {tarball}")
        with src:
            data = src.read(_MAX_SPEC_BYTES + 1)
    if spec_sha256 is not None and hashlib.sha256(data).hexdigest() != spec_sha256:
        raise SpecIntegrityError(f"{SPEC_MEMBER} in {tarball}: sha256 mismatch (expected {spec_sha256})")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the cache is shared by whoever runs the tests
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return dest


def vendored_spec() -> Path:
    """Path of the vendored 0.61.0 spec; :class:`SpecIntegrityError` if it was modified."""
    if _sha256_file(VENDORED_SPEC) != VENDORED_SPEC_SHA256:
        raise SpecIntegrityError(f"{VENDORED_SPEC}: sha256 mismatch (expected {VENDORED_SPEC_SHA256})")
    return VENDORED_SPEC


def ensure_spec(cache_dir: Path | None = None, *, npm: str | None = None) -> Path:
    """Return the path of the pinned ``open-api-spec.yaml``, fetching it with ``npm pack`` if not cached.

    ``cache_dir`` defaults to ``<repo>/.cache/openapi/workos-openapi-spec-0.1.0``. ``npm`` is the npm
    executable (default: ``npm`` on ``PATH``). A cached file whose sha256 does not match is fetched again.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    dest = cache_dir / _SPEC_FILENAME
    if dest.is_file() and _sha256_file(dest) == SPEC_SHA256:
        return dest
    npm_exe = shutil.which(npm or "npm")
    if npm_exe is None:
        raise SpecFetchError(
            f"npm is needed to fetch {SPEC_PACKAGE}@{SPEC_VERSION} (the WorkOS OpenAPI spec) but "
            f"{npm or 'npm'!r} was not found on PATH; install Node.js/npm (apt-get install npm) "
            f"or put the verified file at {dest}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=cache_dir) as tmp:
        cmd = [
            npm_exe, "pack", f"{SPEC_PACKAGE}@{SPEC_VERSION}",
            "--pack-destination", tmp, "--ignore-scripts", "--silent",
        ]  # fmt: skip
        try:
            proc = subprocess.run(  # fixed argv, no shell
                cmd, cwd=tmp, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SpecFetchError(f"`{' '.join(cmd)}` failed to run: {exc}") from exc
        if proc.returncode != 0:
            raise SpecFetchError(
                f"`npm pack {SPEC_PACKAGE}@{SPEC_VERSION}` exited with {proc.returncode}:\n"
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise SpecFetchError(
                f"`npm pack` produced {len(tarballs)} tarballs in {tmp} (expected 1); output: {proc.stdout!r}"
            )
        return extract_spec(tarballs[0], dest)


# ----------------------------------------------------------------------------------------------------
# Contract
# ----------------------------------------------------------------------------------------------------

_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})
_PARAM_SEGMENT = re.compile(r"^\{[^{}/]+\}$")
_JSON_CONTENT = "application/json"

#: Endpoints the SDK (10.6.0) calls that the pinned spec does not document. The ``openapi_contract``
#: fixture adds them (never overriding the spec) with the schema matching the SDK model; ``None`` as a
#: schema means "documented, body not validated".
SDK_ONLY_OPERATIONS: dict[tuple[str, str], dict[str, dict[str, Any] | None]] = {
    ("POST", "/connections"): {"201": {"$ref": "#/components/schemas/Connection"}},
    ("PATCH", "/connections/{id}"): {"200": {"$ref": "#/components/schemas/Connection"}},
    ("POST", "/portal/revoke_link"): {"200": None, "204": None},
}


class ContractViolation(AssertionError):
    """A response that the pinned WorkOS OpenAPI spec does not allow (or does not document)."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        template: str | None = None,
        status: int | None = None,
        json_path: str | None = None,
        schema_path: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.template = template
        self.status = status
        self.json_path = json_path
        self.schema_path = schema_path
        self.detail = detail


def _pointer_escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unshare(node: Any) -> Any:
    """Copy the YAML tree so that YAML anchors/aliases no longer share objects (keeps id()->pointer
    unique)."""
    if isinstance(node, dict):
        return {k: _unshare(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshare(v) for v in node]
    return node


_RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    if "date-time" not in checker.checkers:  # rfc3339-validator missing: never silently skip date-time

        @checker.checks("date-time")
        def _is_datetime(instance: object) -> bool:
            return not isinstance(instance, str) or bool(_RFC3339.match(instance))

    return checker


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    segments: tuple[str | None, ...]  # literal segment, or None for a {parameter}
    operation: Mapping[str, Any]
    pointer: str  # JSON pointer of the operation object


class OpenAPIContract:
    """The operations and response schemas of one OpenAPI 3.1 document, validated as JSON Schema 2020-12."""

    SPEC_URI = "urn:workos:openapi-spec"

    def __init__(
        self, document: Mapping[str, Any], *, source: str = "<memory>", name: str = f"{SPEC_PACKAGE}@{SPEC_VERSION}"
    ) -> None:
        self.document: dict[str, Any] = _unshare(document)
        self.source = source
        self.name = name
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}
        self._format_checker = _format_checker()
        resource = DRAFT202012.create_resource(self.document)
        self.registry: Registry = Registry().with_resource(self.SPEC_URI, resource)
        self._pointers: dict[int, str] = {}
        self._index_pointers(self.document, "")
        for template, item in (self.document.get("paths") or {}).items():
            for method, operation in item.items():
                if method.upper() in _HTTP_METHODS and isinstance(operation, dict):
                    pointer = f"/paths/{_pointer_escape(template)}/{method}"
                    self._add_route(method.upper(), template, operation, pointer)

    # -- construction ---
    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        supplements: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        name: str = f"{SPEC_PACKAGE}@{SPEC_VERSION}",
    ) -> OpenAPIContract:
        """Parse the YAML at ``path`` (C loader when available) and index its operations.

        ``supplements`` maps ``(METHOD, template)`` to ``{status: schema-or-None}`` for operations the
        spec lacks (see :data:`SDK_ONLY_OPERATIONS`); operations the spec documents are never overridden.
        """
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path, "rb") as fh:
            document = yaml.load(fh, Loader=loader)  # a SafeLoader
        if not isinstance(document, dict) or "paths" not in document:
            raise ValueError(f"{path} is not an OpenAPI document")
        contract = cls(document, source=str(path), name=name)
        for (method, template), responses in (supplements or {}).items():
            if (method.upper(), template) not in contract._routes:
                contract.add_operation(method, template, responses)
        return contract

    def add_operation(self, method: str, template: str, responses: Mapping[str, Any]) -> None:
        """Document an extra operation: ``responses`` maps status -> JSON schema (``None``: unchecked)."""
        operation: dict[str, Any] = {"responses": {}, "x-supplement": True}
        for status, schema in responses.items():
            response: dict[str, Any] = {"description": "supplement (not in the pinned spec)"}
            if schema is not None:
                response["content"] = {_JSON_CONTENT: {"schema": _unshare(schema)}}
            else:
                response["x-body-unchecked"] = True
            operation["responses"][str(status)] = response
        # Stored inside the document so that the registry resolves it (and its $refs) like any other schema.
        name = f"{method.upper()} {template}"
        self.document.setdefault("x-supplements", {})[name] = operation
        pointer = f"/x-supplements/{_pointer_escape(name)}"
        self._index_pointers(operation, pointer)
        self._add_route(method.upper(), template, operation, pointer)

    def _add_route(self, method: str, template: str, operation: Mapping[str, Any], pointer: str) -> None:
        segments = tuple(
            None if _PARAM_SEGMENT.match(seg) else seg for seg in template.strip("/").split("/") if template != "/"
        )
        self._routes[(method, template)] = _Route(method, template, segments, operation, pointer)

    def _index_pointers(self, node: Any, pointer: str) -> None:
        if isinstance(node, dict):
            self._pointers.setdefault(id(node), pointer)
            for key, value in node.items():
                self._index_pointers(value, f"{pointer}/{_pointer_escape(str(key))}")
        elif isinstance(node, list):
            self._pointers.setdefault(id(node), pointer)
            for i, value in enumerate(node):
                self._index_pointers(value, f"{pointer}/{i}")

    # -- introspection ---
    @property
    def operations(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        """``{(METHOD, template): operation}`` for every documented operation."""
        return {key: route.operation for key, route in self._routes.items()}

    def templates(self) -> set[str]:
        return {template for _, template in self._routes}

    # -- matching ---
    @staticmethod
    def _split(url_path: str) -> tuple[str, ...]:
        path = urlsplit(url_path).path if "://" in url_path else url_path.split("?", 1)[0].split("#", 1)[0]
        path = path.removeprefix("/")  # a trailing slash stays significant: /organizations/ is not documented
        return tuple(unquote(seg) for seg in path.split("/")) if path else ()

    def _candidates(self, segments: tuple[str, ...], method: str | None) -> list[_Route]:
        found = []
        for route in self._routes.values():
            if method is not None and route.method != method:
                continue
            if len(route.segments) != len(segments):
                continue
            if all(
                (tpl is None and seg != "") or tpl == seg for tpl, seg in zip(route.segments, segments, strict=True)
            ):
                found.append(route)
        # Literal segments beat parameters, left to right: /organizations/external_id/{x} over
        # /organizations/{id}.
        found.sort(key=lambda r: tuple(seg is None for seg in r.segments))
        return found

    def match(self, method: str, url_path: str) -> tuple[str, Mapping[str, Any]]:
        """Map a concrete path to ``(template, operation)``; raise :class:`ContractViolation` if
        undocumented."""
        method = method.upper()
        segments = self._split(url_path)
        found = self._candidates(segments, method)
        if found:
            return found[0].template, found[0].operation
        others = self._candidates(segments, None)
        if others:
            documented = sorted({r.method for r in others if r.template == others[0].template})
            raise ContractViolation(
                f"undocumented operation: {method} {others[0].template} (concrete path {url_path}) is not in "
                f"{self._spec_name()}; that path documents only {', '.join(documented)}",
                method=method, path=url_path, template=others[0].template,
            )  # fmt: skip
        raise ContractViolation(
            f"undocumented operation: no path template in {self._spec_name()} matches {method} {url_path}",
            method=method,
            path=url_path,
        )

    def _spec_name(self) -> str:
        return f"the WorkOS OpenAPI spec ({self.name})"

    # -- validation ---
    @staticmethod
    def _response_key(responses: Mapping[str, Any], status: int) -> str | None:
        for key in (str(status), f"{status // 100}XX", f"{status // 100}xx", "default"):
            if key in responses:
                return key
        return None

    def _validator(self, route: _Route, status_key: str, schema: Any) -> jsonschema.protocols.Validator:
        cache_key = (route.template, route.method, status_key)
        with self._lock:
            validator = self._validators.get(cache_key)
            if validator is None:
                pointer = f"{route.pointer}/responses/{_pointer_escape(status_key)}/content/"
                pointer += f"{_pointer_escape(_JSON_CONTENT)}/schema"
                if self._pointers.get(id(schema)) != pointer:  # pragma: no cover - defensive
                    raise RuntimeError(f"schema index out of sync for {pointer}")
                wrapper = {"$ref": f"{self.SPEC_URI}#{quote(pointer, safe='/~')}"}
                validator = jsonschema.Draft202012Validator(
                    wrapper, registry=self.registry, format_checker=self._format_checker
                )
                self._validators[cache_key] = validator
            return validator

    def schema_location(self, error: ValidationError) -> str:
        """``#/json/pointer`` of the keyword in the document that produced ``error``."""
        base = self._pointers.get(id(error.schema))
        if base is None:
            return "#/<unknown>/" + "/".join(str(p) for p in error.relative_schema_path)
        keyword = _pointer_escape(str(error.validator)) if error.validator is not None else ""
        return f"#{base}/{keyword}" if keyword else f"#{base}"

    def validate(self, method: str, url_path: str, status: int, body: Any) -> str:
        """Check a response against the spec; return the matched template or raise :class:`ContractViolation`.

        ``body`` is the parsed JSON body, or ``None`` for a response without one (204, redirects, empty
        bodies), which is only checked for being documented.
        """
        method = method.upper()
        template, operation = self.match(method, url_path)
        route = self._routes[(method, template)]
        endpoint = f"{method} {template} (concrete path {url_path})"
        responses = operation.get("responses") or {}
        status_key = self._response_key(responses, status)
        if status_key is None:
            raise ContractViolation(
                f"{endpoint}: undocumented response status {status}; {self._spec_name()} documents "
                f"{', '.join(sorted(responses)) or 'no responses'}",
                method=method, path=url_path, template=template, status=status,
            )  # fmt: skip
        response = responses[status_key]
        media = (response.get("content") or {}).get(_JSON_CONTENT)
        schema = media.get("schema") if isinstance(media, dict) else None
        if body is None:
            if schema is not None and 200 <= status < 300 and status != 204:
                raise ContractViolation(
                    f"{endpoint} -> {status}: the spec documents a JSON body for this response, "
                    "but none was sent",
                    method=method, path=url_path, template=template, status=status,
                )  # fmt: skip
            return template
        if schema is None:
            if response.get("x-body-unchecked") or status >= 400:
                return template  # error bodies the spec leaves undescribed (e.g. 401) are not checked
            raise ContractViolation(
                f"{endpoint} -> {status}: the spec documents no JSON body for this response, "
                f"but one was sent: {_short(body)}",
                method=method, path=url_path, template=template, status=status,
            )  # fmt: skip
        validator = self._validator(route, status_key, schema)
        errors = list(validator.iter_errors(body))
        if not errors:
            return template
        primary = best_match(errors)
        json_path = primary.json_path
        schema_path = self.schema_location(primary)
        lines = [
            f"{endpoint} -> {status}: response body violates {self._spec_name()}",
            f"  at:      {json_path}",
            f"  schema:  {schema_path}",
            f"  problem: {primary.message}",
        ]
        rest = [e for e in errors if e is not primary]
        for err in rest[:5]:
            lines.append(f"  also:    {err.json_path} ({self.schema_location(err)}): {_short(err.message, 200)}")
        if len(rest) > 5:
            lines.append(f"  ... and {len(rest) - 5} more")
        raise ContractViolation(
            "\n".join(lines),
            method=method,
            path=url_path,
            template=template,
            status=status,
            json_path=json_path,
            schema_path=schema_path,
            detail=primary.message,
        )


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------
# Recording HTTP client
# ----------------------------------------------------------------------------------------------------


class _FrozenHeaders(Mapping[str, str]):
    """Immutable, hashable, case-insensitive header mapping (repeated headers joined with ``", "``)."""

    __slots__ = ("_items", "_lookup")

    def __init__(self, items: Any) -> None:
        merged: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            if key in merged:
                merged[key] = (merged[key][0], f"{merged[key][1]}, {value}")
            else:
                merged[key] = (name, value)
        self._items = tuple(merged.values())
        self._lookup = {k: v for k, (_, v) in merged.items()}

    def __getitem__(self, key: str) -> str:
        return self._lookup[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._lookup == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({dict(self._items)!r})"


@dataclass(frozen=True)
class Exchange:
    """One recorded request/response pair.

    ``path`` is the raw (percent-encoded) request path with the API base URL's path prefix removed;
    ``query`` the
    decoded query pairs in order; ``body`` the parsed JSON response body or ``None`` (no body, or not JSON);
    ``headers`` the response headers (case-insensitive).
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    status: int
    body: Any
    headers: Mapping[str, str]
    request_body: Any = field(default=None, repr=False, compare=False)
    url: str = field(default="", repr=False, compare=False)
    content: bytes = field(default=b"", repr=False, compare=False)

    def param(self, name: str) -> str | None:
        """First value of query parameter ``name``."""
        return next((v for k, v in self.query if k == name), None)


def _parse_json(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


class RecordingHTTPClient(httpx2.Client):
    """``httpx2.Client`` that records every exchange; pass it as ``WorkOSClient(http_client=...)``.

    The SDK's ``HttpxBackend`` calls ``client.request(method, absolute_url, params=<query>, headers=...,
    content=..., timeout=...)``, which funnels into :meth:`send`; recording happens there, so redirects
    followed by httpx (``follow_redirects=True``) are recorded hop by hop too. ``api_base_url`` (default:
    this client's own ``base_url``) says which path prefix to strip from recorded paths, e.g.
    ``http://host/prefix``. Other keyword arguments go to ``httpx2.Client``, e.g.
    ``transport=httpx2.WSGITransport(app=...)`` for an in-process emulator.
    """

    def __init__(self, *, api_base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        prefix_source = api_base_url if api_base_url is not None else str(self.base_url)
        self._prefix = urlsplit(prefix_source).path.rstrip("/") if prefix_source else ""
        self._exchanges: list[Exchange] = []
        self._recording_lock = threading.Lock()

    @property
    def exchanges(self) -> list[Exchange]:
        """Recorded exchanges, oldest first (a copy)."""
        with self._recording_lock:
            return list(self._exchanges)

    def clear(self) -> None:
        with self._recording_lock:
            self._exchanges.clear()

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        for hop in [*response.history, response]:
            self._record(hop)
        return response

    def _record(self, response: httpx2.Response) -> None:
        request = response.request
        try:
            content = response.content
        except httpx2.ResponseNotRead:  # stream=True and not read yet: record without a body
            content = b""
        raw_path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        if self._prefix and (raw_path == self._prefix or raw_path.startswith(self._prefix + "/")):
            raw_path = raw_path[len(self._prefix) :] or "/"
        try:
            request_content = request.content
        except httpx2.RequestNotRead:
            request_content = b""
        exchange = Exchange(
            method=request.method.upper(),
            path=raw_path,
            query=tuple(request.url.params.multi_items()),
            status=response.status_code,
            body=_parse_json(content),
            headers=_FrozenHeaders(response.headers.multi_items()),
            request_body=_parse_json(request_content),
            url=str(request.url),
            content=content,
        )
        with self._recording_lock:
            self._exchanges.append(exchange)

    def assert_all_valid(self, contract: OpenAPIContract, *, include_bodiless: bool = True) -> int:
        """Validate every recorded exchange with a JSON body (and, by default, check that bodiless ones
        are documented); raise one :class:`ContractViolation` listing every failure. Returns the number
        of exchanges checked.
        """
        failures: list[ContractViolation] = []
        checked = 0
        for exchange in self.exchanges:
            if exchange.body is None and (not include_bodiless or exchange.content):
                continue  # a non-JSON body cannot be schema-checked
            checked += 1
            try:
                contract.validate(exchange.method, exchange.path, exchange.status, exchange.body)
            except ContractViolation as exc:
                failures.append(exc)
        if failures:
            first = failures[0]
            text = "\n\n".join(str(f) for f in failures)
            raise ContractViolation(
                f"{len(failures)} of {checked} recorded responses violate the WorkOS OpenAPI spec:\n\n{text}",
                method=first.method,
                path=first.path,
                template=first.template,
                status=first.status,
                json_path=first.json_path,
                schema_path=first.schema_path,
                detail=first.detail,
            )
        return checked


# ----------------------------------------------------------------------------------------------------
# pytest plugin (``pytest_plugins = ["tests.support.openapi"]``)
# ----------------------------------------------------------------------------------------------------


def load_contract() -> OpenAPIContract:
    """Spec 0.61.0 plus :data:`LEGACY_OPERATIONS` (from 0.1.0) plus :data:`SDK_ONLY_OPERATIONS`."""
    contract = OpenAPIContract.load(
        vendored_spec(), supplements=SDK_ONLY_OPERATIONS, name=f"WorkOS OpenAPI {VENDORED_SPEC_VERSION}"
    )
    if LEGACY_OPERATIONS:
        legacy = OpenAPIContract.load(ensure_spec())
        for method, template in LEGACY_OPERATIONS:
            operation = legacy.operations[(method, template)]
            responses = {
                status: ((r.get("content") or {}).get(_JSON_CONTENT) or {}).get("schema")
                for status, r in (operation.get("responses") or {}).items()
            }
            contract.add_operation(method, template, responses)
    return contract


@pytest.fixture(scope="session")
def openapi_contract() -> OpenAPIContract:
    """The WorkOS OpenAPI contract (see :func:`load_contract`), loaded once per session."""
    return load_contract()


@pytest.fixture(scope="session")
def legacy_openapi_contract() -> OpenAPIContract:
    """The npm ``@workos/openapi-spec@0.1.0`` contract (for the fetch/integrity helpers' own tests)."""
    return OpenAPIContract.load(ensure_spec(), supplements=SDK_ONLY_OPERATIONS)


@pytest.fixture
def recording_http_client() -> Iterator[RecordingHTTPClient]:
    """A fresh :class:`RecordingHTTPClient` (real network transport), closed after the test.

    For an in-process emulator build your own:
    ``RecordingHTTPClient(transport=httpx2.WSGITransport(app=app))``.
    """
    client = RecordingHTTPClient()
    try:
        yield client
    finally:
        client.close()
