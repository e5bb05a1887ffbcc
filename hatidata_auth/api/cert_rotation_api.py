"""``/api/v1/organization/sso/certificate-rotation``: the SAML signing-certificate rotation of the organization's
connection (``services.cert_rotation``), for automation. The test sign-in that retires the old certificate needs a
browser: it is run from ``/admin/sso/rotation/``.

Answers: ``GET`` 200 the rotation, 404 ``no_rotation``; ``POST`` (start) 201 the rotation (200 when the same new
certificate is already being rotated in), 422 ``invalid_metadata`` naming ``metadata_xml`` / ``metadata_url``
(both or neither given, bad metadata, a refused or unreachable URL) or ``no_new_certificate``, 409
``no_connection`` / ``rotation_in_progress`` / ``no_plugin``; ``POST …/switched`` 200, 404 ``no_rotation``, 409
``rotation_finished``; ``DELETE`` (cancel) 204, 404 ``no_rotation``, 409 ``rotation_finished``, 502 WorkOS
refused. Every route needs ``sso:manage`` (and, for a change, a recent sign-in). Each route first restores old
certificates a test sign-in left set aside past ``cert_rotation.TEST_WINDOW``.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..extensions import db
from ..identity import current_identity, request_cause
from ..idp import get_registry
from ..models import Organization, utcnow
from ..services import cert_rotation, rotation_metadata
from .common import guard, timestamp

rotation_blp = Blueprint("certificate_rotation", __name__,
                         description="SAML signing-certificate rotation with overlap (no failed sign-in).")
BLUEPRINTS = (rotation_blp,)
PATH = "/organization/sso/certificate-rotation"


class RotationSchema(Schema):
    id = fields.String(required=True)
    connection_id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(cert_rotation.STATES),
                          metadata={"description": "`both_trusted` (old and new verify sign-ins), `switched` (the "
                                                   "IdP signs with the new one), `retired` (old ones removed)."})
    new_certificate_id = fields.String(required=True, metadata={"description": "WorkOS's id of the new one."})
    new_fingerprint = fields.String(required=True, metadata={"description": "SHA-256 of the DER, hex."})
    new_not_after = timestamp(allow_none=True, required=True)
    old_certificate_ids = fields.List(fields.String(), required=True,
                                      metadata={"description": "WorkOS ids of the certificates it retires."})
    metadata_source = fields.String(required=True, metadata={"description": "`xml` or `url`."})
    switched_at = timestamp(allow_none=True, required=True)
    retired_at = timestamp(allow_none=True, required=True)
    verified_by = fields.String(allow_none=True, required=True,
                                metadata={"description": "Email of the test sign-in that retired the old ones."})


class StartSchema(Schema):
    metadata_xml = fields.String(validate=validate.Length(min=1, max=rotation_metadata.MAX_BYTES),
                                 metadata={"description": "The IdP's new SAML metadata document."})
    metadata_url = fields.String(validate=validate.Length(min=1, max=2048),
                                 metadata={"description": "Or its https URL, on the IdP's own hosts; fetched with "
                                                          "bounds, never from a private network."})


def _client() -> Any:
    return current_app.extensions["hatidata_workos"].client


def _organization() -> Organization:
    org = db.session.get(Organization, current_identity.organization_id)
    if org is None:
        raise cert_rotation.RotationError("No such organization.", status=404, code="not_found")
    return org


@rotation_blp.route(PATH, methods=["GET"])
@guard(rotation_blp, "sso:manage")
@rotation_blp.response(200, RotationSchema)
def get_rotation() -> cert_rotation.RotationView:
    """The connection's rotation; 404 ``no_rotation`` when none was started."""
    org = _organization()
    if cert_rotation.restore_abandoned(db.session(), _client(), org, request_cause()) is not None:
        db.session.commit()
    found = cert_rotation.current(db.session(), org.id, org.connection_id)
    if found is None:
        raise cert_rotation.RotationError("No certificate rotation was started.", status=404, code="no_rotation")
    return found


@rotation_blp.route(PATH, methods=["POST"])
@guard(rotation_blp, "sso:manage")
@rotation_blp.arguments(StartSchema)
@rotation_blp.response(201, RotationSchema)
def start_rotation(body: dict[str, Any]) -> tuple[cert_rotation.RotationView, int]:
    """Trust the new metadata's certificate beside the old ones (``both_trusted``); give exactly one of
    ``metadata_xml`` and ``metadata_url``. Audited ``sso.certificate_rotation.started``."""
    if ("metadata_xml" in body) == ("metadata_url" in body):
        message = "Give exactly one of metadata_xml and metadata_url."
        raise cert_rotation.RotationError(message, status=422, code="invalid_metadata", details={
            "fields": {"metadata_xml": [message], "metadata_url": [message]}})
    org = _organization()
    before = cert_rotation.current(db.session(), org.id, cert_rotation.connection_of(org))
    xml = body["metadata_xml"].encode() if "metadata_xml" in body else None
    metadata, source = rotation_metadata.read(rotation_metadata.plugin_for(get_registry(current_app), org),
                                              xml=xml, url=body.get("metadata_url"), now=utcnow(),
                                              xml_field="metadata_xml")
    rotation = cert_rotation.start(db.session(), _client(), org, metadata, source, request_cause())
    db.session.commit()
    return rotation, 200 if before == rotation else 201


@rotation_blp.route(f"{PATH}/switched", methods=["POST"])
@guard(rotation_blp, "sso:manage")
@rotation_blp.response(200, RotationSchema)
def switched() -> cert_rotation.RotationView:
    """The IdP now signs with the new certificate (``switched``); a repeat is a no-op. Audited
    ``sso.certificate_rotation.switched``."""
    rotation = cert_rotation.mark_switched(db.session(), _organization(), request_cause())
    db.session.commit()
    return rotation


@rotation_blp.route(PATH, methods=["DELETE"])
@guard(rotation_blp, "sso:manage")
@rotation_blp.response(204)
def cancel_rotation() -> None:
    """Cancel the rotation (not ``retired``; e.g. started with the wrong metadata): the new certificate is
    removed at WorkOS when the rotation added it, certificates set aside for a test sign-in are restored, and a
    new rotation can start. Audited ``sso.certificate_rotation.cancelled``."""
    cert_rotation.cancel(db.session(), _client(), _organization(), request_cause())
    db.session.commit()
