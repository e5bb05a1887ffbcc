# Settings file of the `testing` profile. The test fixtures override the database, cache and emulator URL.
# The profile's own values (e.g. WORKOS_MAX_RETRIES = 0) are in hatidata_auth/config.py's PROFILE_SETTINGS.
