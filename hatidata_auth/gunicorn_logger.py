"""gunicorn's logger for ``config/gunicorn.conf.py`` (its ``logger_class``)."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger


class AccessLogger(Logger):
    """gunicorn's :class:`~gunicorn.glogging.Logger`, building a request's access-log line only when the access
    log is on (``accesslog`` set: ``GUNICORN_ACCESS_LOG``).

    gunicorn takes any ``logconfig_dict`` (ours sends its logs through the JSON formatter) to mean an access log
    may be wanted, so it builds every request's atoms and log record even when the access logger has no handler
    and does not propagate: about 6 % of a sync worker's samples on ``/healthz`` (py-spy, ``bench.auth``'s load).
    """

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """The access-log line of one request, if the access log is on."""
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)
