"""WSGI entry point: ``gunicorn -c config/gunicorn.conf.py wsgi:app``."""

from hatidata_auth import create_app

app = create_app()
