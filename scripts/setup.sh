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
# chatter goes to a log, shown only when an install fails
log=.venv/install.log

# Debian packages: swtpm for the software TPM; tpm2-pytss compiles against libtss2 from source;
# socat and mbpoll for the Modbus tests (RTU over a pseudo-terminal pair; an independent client);
# mosquitto, the MQTT broker of the publishing tests; faketime (libfaketime) steps the agent's
# wall clock in the clock-fault tests; libfuse2 for the power-cut suite's file system (fusepy)
system_packages="swtpm swtpm-tools libtss2-dev pkg-config gcc python3-dev socat mbpoll mosquitto faketime libfuse2"
# Node.js for the tests' independent OPC UA server (node-opcua), unless a Node.js with npm
# is already installed (e.g. from NodeSource, whose nodejs package includes npm)
if [ "${1:-}" = "test" ] && ! command -v npm >/dev/null; then
  system_packages="$system_packages nodejs npm"
fi

install_system_packages() {
  command -v dpkg-query >/dev/null \
    || { echo "edgeseal: not Debian/Ubuntu: install the equivalents of: $system_packages" >&2; return 0; }
  local missing=() pkg
  for pkg in $system_packages; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local install="apt-get install -y -q ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "edgeseal: missing system packages; as root run:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive $install" >&2
    exit 2
  fi
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive $install; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "edgeseal: installing ${missing[*]} failed (log above, also in $log)" >&2
    exit 1
  fi
}

install_system_packages
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
       && .venv/bin/python -m pip install --disable-pip-version-check -e ".${extras}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "edgeseal: installation failed (log above, also in $log)" >&2
  exit 1
fi
# the Node.js test tools (node-opcua; solc and anvil for the anchor contract), pinned by
# tests/interop/opcua/package-lock.json and contracts/package-lock.json
if [ "${1:-}" = "test" ]; then
  bash scripts/npm-tools.sh
fi
