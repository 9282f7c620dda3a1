#!/usr/bin/env bash
# The promise suites of docs/reliability.md at full size, then the figures of each.
# CI runs the same tests at a smaller size (the test command); this is the local run whose
# figures docs/reliability.md publishes. Sizes can be changed through the environment.
#   bash scripts/reliability.sh            every suite (about an hour and a half)
#   bash scripts/reliability.sh -k crash   one suite (pytest's -k)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export EDGESEAL_CRASH_TRIALS=${EDGESEAL_CRASH_TRIALS:-110}
export EDGESEAL_POWERCUT_TRIALS=${EDGESEAL_POWERCUT_TRIALS:-110}
export EDGESEAL_SOAK_SECONDS=${EDGESEAL_SOAK_SECONDS:-3600}
export EDGESEAL_FUZZ_EXAMPLES=${EDGESEAL_FUZZ_EXAMPLES:-5000}
export EDGESEAL_TAMPER_ALL=${EDGESEAL_TAMPER_ALL:-1}
# the faults with suites of their own, beside tests/promises/test_faults.py
faults=(
  tests/integration/mqtt/test_store_and_forward.py
  tests/integration/modbus/test_modbus_faults.py
  tests/integration/modbus/test_modbus_isolation.py
  tests/integration/opcua/test_opcua_restarts.py
  tests/integration/anchoring/test_chain_faults.py
  tests/integration/anchoring/test_reconciliation.py
  tests/integration/test_disk_budget.py
  tests/integration/test_disk_full.py
  tests/integration/test_tpm_key_non_exportable.py
  tests/system/test_systemd.py
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
.venv/bin/python -m pytest -s -p no:cacheprovider tests/promises "${faults[@]}" "$@" | tee "$log" || status=$?
echo
echo "Figures:"
grep -o 'reliability: .*' "$log" || echo "(none: no suite ran to its end)"
exit "$status"
