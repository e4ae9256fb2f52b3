#!/usr/bin/env bash
# Install everything FlightSeal needs on a fresh Debian 12 machine, as root:
# system packages (swtpm, SoftHSM2, TSS headers for tpm2-pytss, tpm2-tools) and a virtualenv
# in .venv with the project and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev build-essential pkg-config libtss2-dev
              swtpm swtpm-tools tpm2-tools softhsm2 git
              postgresql chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[hardware,sim,dev,bench,fleet]'
echo "install: done (.venv/bin/flightseal)"
