#!/usr/bin/env bash
# Installs what the dashboard's Chromium test (tests/dashboard.rs) needs: Debian's `chromium`
# (only when missing) and the npm packages of tests/dashboard/package.json. playwright-core never
# downloads a browser of its own: the test drives /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "dashboard setup: chromium is missing and apt-get is not available" >&2
    exit 1
  fi
fi

if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    echo "dashboard setup: node/npm are missing and apt-get is not available" >&2
    exit 1
  fi
fi

# Playwright must not fetch browsers; the system Chromium is used.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
