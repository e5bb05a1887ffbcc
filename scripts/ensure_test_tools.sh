#!/usr/bin/env bash
# Install what the test suite needs outside Python: Debian's Chromium for the browser tests.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing chromium (Debian package) for the browser tests..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser tests need Debian's chromium at /usr/bin/chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
command -v npm >/dev/null || { echo "the contract tests need npm (to fetch @workos/openapi-spec)" >&2; exit 1; }
