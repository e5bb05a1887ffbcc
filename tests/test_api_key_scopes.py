"""API-key scopes, proven on every operation of the served OpenAPI document.

An admin's agent key holds only the scopes it was given: for each operation that needs a permission, a key
of the same admin whose scopes lack exactly that permission is refused with 403 and changes nothing, while the
admin's full key is not refused for lack of permission.
"""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.roles import permissions_for
from hatidata_auth.services import api_keys as key_service
from tests.api_support import Tenant, make_tenant, snapshot
from tests.test_api_isolation import _body, _operations, _url


def _key_without(app: Flask, client: FlaskClient, tenant: Tenant, missing: str) -> str:
    with app.app_context():
        created = key_service.create_key(
            db.session, organization_id=tenant.id, owner_user_id=tenant.users["admin"], name=f"no {missing}",
            scopes=sorted(permissions_for("admin") - {missing}), cause=Cause.by(Actor("user", tenant.users["admin"])))
        db.session.commit()
    # First use records last_used_at (throttled afterwards), which is not a change made by the operations.
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {created.secret}"}).status_code == 200
    return created.secret


def test_every_permission_is_enforced_on_api_key_scopes(app: Flask, client: FlaskClient) -> None:
    alpha = make_tenant(app, "Alpha")
    document = client.get("/api/openapi.json").get_json()
    operations = [(p, m, op) for p, m, op in _operations(document) if op.get("x-permissions")]
    assert len(operations) >= 20
    keys: dict[str, str] = {}
    failures: list[str] = []
    for path, method, op in operations:
        url, _ = _url(path, alpha.ids)
        for permission in op["x-permissions"]:
            if permission not in keys:
                keys[permission] = _key_without(app, client, alpha, permission)
            before = snapshot(app, alpha)
            response = client.open(url, method=method.upper(), json=_body(op, document),
                                   headers={"Authorization": f"Bearer {keys[permission]}"})
            response.close()
            after = snapshot(app, alpha)
            if response.status_code != 403:
                failures.append(f"{method.upper()} {path} without {permission}: {response.status_code}")
            elif after != before:
                changed = sorted(k for k in before if before[k] != after[k])
                failures.append(f"{method.upper()} {path} without {permission} changed {changed}")
        full = client.open(url, method=method.upper(), json=_body(op, document),
                           headers={"Authorization": f"Bearer {alpha.keys['admin']}"})
        full.close()
        if full.status_code == 403 and "permission" in full.get_json()["error"]["message"].lower():
            failures.append(f"{method.upper()} {path} refused the admin's full key: {full.get_json()}")
    assert not failures, "\n".join(failures)
