"""Test-only routes that raise any error status, for the error-page tests (under ``/_test/``, which the metric
label test knows as test-only): ``/_test/http/<status>`` raises Werkzeug's exception (500: an unexpected fault),
``/_test/app/<status>`` our ``AppError`` with :data:`APP_ERROR_MESSAGE`."""

from __future__ import annotations

from typing import NoReturn

from flask import Flask, abort

from hatidata_auth.errors import AppError

APP_ERROR_MESSAGE = "The thing you asked for cannot be done."


def add_error_routes(app: Flask) -> Flask:
    """Register both routes on *app*, answering a 500 as production does (exceptions not propagated)."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def http_error(status: int) -> NoReturn:
        if status == 500:
            raise RuntimeError("a fault on our side")
        abort(status)

    def app_error(status: int) -> NoReturn:
        raise AppError(APP_ERROR_MESSAGE, status=status, code="some_code")

    app.add_url_rule("/_test/http/<int:status>", view_func=http_error)
    app.add_url_rule("/_test/app/<int:status>", view_func=app_error)
    return app
