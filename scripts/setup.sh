#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs edgeseal into it, with test tools if asked.
#   bash scripts/setup.sh          the agent
#   bash scripts/setup.sh test     the agent and its test tools
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "edgeseal needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv || { echo "edgeseal: cannot create a virtualenv; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 2; }
fi
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
# pip's chatter goes to a log, shown only when the install fails
log=.venv/install.log
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
       && .venv/bin/python -m pip install --disable-pip-version-check -e ".${extras}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "edgeseal: installation failed (log above, also in $log)" >&2
  exit 1
fi
