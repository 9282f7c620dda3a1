#!/usr/bin/env bash
# Installs the Node.js tools of the tests, each folder exactly as its package-lock.json pins it:
#   tests/interop/opcua   node-opcua, the independent OPC UA server of the interop tests
#   contracts             solc (solcjs), the compiler of agent/anchor/AnchorRegistry.json, and
#                         anvil, the local chain of the anchoring tests (its binary comes in a
#                         per-platform optional dependency: no download besides the registry's)
#   bash scripts/npm-tools.sh
# Without npm it says so and succeeds: the interop tests then skip, saying Node.js is
# missing, and the chain tests fail, naming this script.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
  echo "edgeseal: npm not found: node-opcua, solc and anvil need Node.js >= 18 with npm" >&2
  exit 0
fi
for dir in tests/interop/opcua contracts; do
  # npm ci starts by deleting node_modules: skip it when the lock file is the one last installed
  stamp=$dir/node_modules/.edgeseal-installed-lock.json
  if cmp -s "$dir/package-lock.json" "$stamp"; then
    continue
  fi
  # chatter goes to a log, shown only when the install fails
  log=$(mktemp)
  if ! npm ci --prefix "$dir" --no-audit --no-fund >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "edgeseal: npm ci in $dir failed (log above)" >&2
    exit 1
  fi
  rm -f "$log"
  cp "$dir/package-lock.json" "$stamp"
done
