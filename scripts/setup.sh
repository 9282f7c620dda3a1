#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs edgeseal into it, with test tools if asked.
#   bash scripts/setup.sh          the agent
#   bash scripts/setup.sh test     the agent and its test tools
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "edgeseal needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2; exit 2; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
