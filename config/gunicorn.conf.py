"""Gunicorn settings; every value can be overridden by the environment variable named beside it."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
# GUNICORN_ACCESS_LOG=off (or /dev/null, or empty) turns the access log off, e.g. for benchmarks.
_access_log = os.environ.get("GUNICORN_ACCESS_LOG", "-")
_access_off = _access_log in ("", "off", "/dev/null")
accesslog = None if _access_off else _access_log
# With the access log off, no request builds its line (gunicorn would, for a logger with no handler).
logger_class = "hatidata_auth.gunicorn_logger.AccessLogger"
# Never log query strings with secrets: the access log shows method, path and status only.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss rid=%({x-request-id}o)s'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn 27's control socket defaults to one fixed path in the home folder (~/.gunicorn/gunicorn.ctl): a second
# instance on the machine (a test server, a benchmark, a second `make run`) takes it over and removes it when it
# stops. Off unless GUNICORN_CONTROL_SOCKET names a path of this instance's own.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "") or None
control_socket_disable = control_socket is None

# Structured logs: gunicorn's error and access logs go through the app's JSON formatter (request id included).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "hatidata_auth.logs.JsonFormatter"}},
    # The handler's name is the one hatidata_auth.logs.configure_logging looks for, so it is not added twice.
    "handlers": {"hatidata-json": {"class": "hatidata_auth.logs.StderrHandler", "formatter": "json"}},
    "root": {"level": os.environ.get("HATIDATA_LOG_LEVEL", "INFO"), "handlers": ["hatidata-json"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": not _access_off},
    },
}


# Prometheus multi-process mode: PROMETHEUS_MULTIPROC_DIR names a folder every worker writes its samples to;
# it is emptied when the master starts, and a dead worker's live gauges are dropped.
def on_starting(server):  # gunicorn hook
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))


def child_exit(server, worker):  # gunicorn hook
    from hatidata_auth.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def post_worker_init(worker):  # gunicorn hook: the appliers and the audit worker start in each worker, after the fork
    from hatidata_auth import audit_runtime
    from hatidata_auth.inbox_runtime import start

    start(worker.wsgi)
    audit_runtime.start(worker.wsgi)


def worker_exit(server, worker):  # gunicorn hook
    from hatidata_auth import audit_runtime
    from hatidata_auth.inbox_runtime import stop

    app = getattr(worker, "wsgi", None)  # None: stopped while still loading the app (Ctrl-C during a boot)
    if app is not None:
        stop(app)
        audit_runtime.stop(app)
