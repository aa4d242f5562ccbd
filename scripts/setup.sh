#!/usr/bin/env bash
# setup.sh — installs what plumb's build and tests need on a Debian machine: the Debian
# packages below (when missing) and a Python virtual environment in .venv with the test
# tools pinned in tests/requirements.txt. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake clang libclang-rt-14-dev pkg-config python3 python3-venv python3-pip
              libcjson-dev libpcre2-dev ca-certificates libh2o-evloop-dev chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

req=tests/requirements.txt
stamp=.venv/.plumb-requirements
if [ ! -x .venv/bin/python ] || ! cmp -s "$req" "$stamp"; then
  echo "setup: creating .venv with $(tr '\n' ' ' < "$req")"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$req"
  cp "$req" "$stamp"
fi
