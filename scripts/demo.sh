#!/usr/bin/env bash
# Sets up edgeseal on a fresh machine and runs the demo: bash scripts/demo.sh [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edgeseal demo --dir demo-out "$@"
