"""The login routes (``/auth/...``) and the small identity API (``/api/v1/...``)."""
