"""gunicorn's logger for ``config/gunicorn.conf.py`` (its ``logger_class``)."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger
from gunicorn.instrument.statsd import Statsd


class AccessLogger(Logger):
    """gunicorn's :class:`~gunicorn.glogging.Logger`, building a request's access-log line only when the access
    log is on (``accesslog`` set: ``GUNICORN_ACCESS_LOG``); with ``statsd_host`` set, an :class:`AccessStatsd`.

    gunicorn takes any ``logconfig_dict`` (ours sends its logs through the JSON formatter) to mean an access log
    may be wanted, so it builds every request's atoms and log record even when the access logger has no handler
    and does not propagate: about 6 % of a sync worker's samples on ``/healthz`` (py-spy, ``bench.auth``'s load).
    gunicorn switches to its statsd logger for ``--statsd-host`` only while ``logger_class`` is its default, so
    this class keeps that switch.
    """

    def __new__(cls, cfg: Any) -> Any:
        if cls is AccessLogger and cfg.statsd_host:
            return AccessStatsd(cfg)
        return super().__new__(cls)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """The access-log line of one request, if the access log is on."""
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


class AccessStatsd(Statsd):
    """gunicorn's :class:`~gunicorn.instrument.statsd.Statsd`: every request's metrics, and its access-log line
    only when the access log is on (see :class:`AccessLogger`)."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """The request's statsd metrics, and its access-log line if the access log is on."""
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)
            return
        # Statsd.access's metrics, without the line it would build first
        status = resp.status
        if isinstance(status, bytes):
            status = status.decode("utf-8")
        if isinstance(status, str):
            status = int(status.split(None, 1)[0])
        self.timer("gunicorn.request.duration", request_time.seconds * 1000 + request_time.microseconds / 1000)
        self.increment("gunicorn.requests", 1)
        self.increment(f"gunicorn.request.status.{status}", 1)
