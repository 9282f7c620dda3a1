#!/usr/bin/env bash
# Installs the Node.js test tools: node-opcua, the independent OPC UA server of the OPC UA
# interop tests (tests/interop/opcua), exactly as package-lock.json pins it.
#   bash scripts/npm-test-tools.sh
# Without npm it says so and succeeds: those tests then skip, saying Node.js is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/interop/opcua
if ! command -v npm >/dev/null; then
  echo "edgeseal: npm not found: the node-opcua interop tests will skip (they need Node.js >= 18 with npm)" >&2
  exit 0
fi
# npm ci starts by deleting node_modules: skip it when the lock file is the one last installed
stamp=$dir/node_modules/.edgeseal-installed-lock.json
if cmp -s "$dir/package-lock.json" "$stamp"; then
  exit 0
fi
# chatter goes to a log, shown only when the install fails
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! npm ci --prefix "$dir" --no-audit --no-fund >"$log" 2>&1; then
  cat "$log" >&2
  echo "edgeseal: npm ci in $dir failed (log above)" >&2
  exit 1
fi
cp "$dir/package-lock.json" "$stamp"
