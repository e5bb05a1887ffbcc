# Settings file of the `testing` profile. The test fixtures override the database, cache and emulator URL.
WORKOS_MAX_RETRIES = 0
