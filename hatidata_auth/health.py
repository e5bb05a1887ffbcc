"""Liveness and readiness probes."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from .extensions import cache, db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify(status="ok")


def _check_database() -> None:
    db.session.execute(text("SELECT 1"))


def _check_cache() -> None:
    key = f"readyz:{uuid.uuid4().hex}"
    if not cache.set(key, "1", timeout=10) or cache.get(key) != "1":
        raise RuntimeError("cache did not keep a value")
    cache.delete(key)


def _check_workos() -> None:
    gateway = current_app.extensions["hatidata_workos"]
    gateway.client.organizations.list_organizations(
        limit=1, request_options={"max_retries": 0, "timeout": 3}
    )


CHECKS = {"database": _check_database, "cache": _check_cache, "workos": _check_workos}


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Database, cache and WorkOS are reachable; otherwise 503 naming what failed."""
    results: dict[str, Any] = {}
    failed: list[str] = []
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure makes the part not ready
            results[name] = {"ok": False, "error": type(exc).__name__}
            failed.append(name)
            if name == "database":
                db.session.rollback()
        else:
            results[name] = {"ok": True}
    db.session.remove()
    if failed:
        body = {"status": "unavailable", "failed": failed, "checks": results,
                "error": {"code": "not_ready", "message": f"not ready: {', '.join(failed)} unreachable",
                          "details": {"failed": failed}}}
        return jsonify(body), 503
    return jsonify(status="ready", checks=results), 200
