# Settings file of the `production` profile. Secrets come from the environment, never from this file:
# DATABASE_URL, REDIS_URL, WORKOS_API_KEY, WORKOS_CLIENT_ID, WORKOS_WEBHOOK_SECRET, HATIDATA_COOKIE_KEY and
# SECRET_KEY are required; WORKOS_BASE_URL is optional (defaults to https://api.workos.com).
# Every default (e.g. WORKOS_TIMEOUT = 10.0, WORKOS_MAX_RETRIES = 2) is in hatidata_auth/config.py's DEFAULTS;
# set a name here only to change it for this deployment.
