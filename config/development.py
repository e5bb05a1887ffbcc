# Settings file of the `development` profile (the embedded default). Environment variables override it.
# SQLite under instance/, a file cache shared by every worker on this machine, the local WorkOS emulator.
WORKOS_BASE_URL = "http://127.0.0.1:4100"
