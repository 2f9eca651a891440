#!/usr/bin/env bash
# Installs the Python packages in requirements.txt when missing (pip leaves installed pins alone).
set -euo pipefail
cd "$(dirname "$0")"
if grep -qvE '^\s*(#|$)' requirements.txt; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements.txt
fi
