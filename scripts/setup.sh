#!/usr/bin/env bash
# setup.sh — installs what one kind of work on plumb needs on a Debian machine, only what is
# missing, so it is cheap to run again. Each argument names a set (default: build):
#   build   the build: make, cmake, gcc, pkg-config and the libraries' -dev packages (libcurl
#           and OpenSSL for the registry client among them; the OpenCL ICD loader and headers
#           for the OpenCL backend)
#   fuzz    clang and its runtime, for the libFuzzer harnesses (make fuzz, fuzz-smoke)
#   model   Python's pip and CA certificates, for scripts/get-model.sh (make model, run)
#   test    the test tools: the Python virtual environment .venv with tests/requirements.txt,
#           Debian's chromium (the chat-page test drives it through playwright), man-db and
#           groff (the man page test), binutils (addr2line, readelf), docker-registry (the
#           OCI registry tests/e2e/test_oci.py starts on loopback), PoCL (an OpenCL platform
#           on the CPU, which the OpenCL backend's tests run on); make test asks for
#           build, fuzz, model and test together
# The Makefile's targets call it with the sets they need (`make` only `build`).
# `setup.sh --list SET...` prints the packages of the sets, one per line, and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_PACKAGES=(make cmake gcc libc6-dev pkg-config libcjson-dev libpcre2-dev libh2o-evloop-dev
                libcurl4-openssl-dev libssl-dev ocl-icd-opencl-dev opencl-headers)
FUZZ_PACKAGES=(clang libclang-rt-14-dev)
MODEL_PACKAGES=(python3 python3-pip ca-certificates)
TEST_PACKAGES=(python3 python3-venv python3-pip ca-certificates chromium man-db groff-base binutils
               docker-registry skopeo openssl haproxy iproute2 pocl-opencl-icd clinfo)

list=0
if [ "${1:-}" = "--list" ]; then
  list=1
  shift
fi
[ $# -gt 0 ] || set -- build
wanted=()
venv=0
for set in "$@"; do
  case "$set" in
    build) wanted+=("${BUILD_PACKAGES[@]}") ;;
    fuzz)  wanted+=("${FUZZ_PACKAGES[@]}") ;;
    model) wanted+=("${MODEL_PACKAGES[@]}") ;;
    test)  wanted+=("${TEST_PACKAGES[@]}"); venv=1 ;;
    *) echo "setup: unknown set '$set' (build, fuzz, model or test)" >&2; exit 2 ;;
  esac
done

if [ "$list" = 1 ]; then
  printf '%s\n' "${wanted[@]}" | sort -u
  exit 0
fi

missing=()
for p in "${wanted[@]}"; do
  case " ${missing[*]} " in *" $p "*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup ($*): installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # waits for another apt run (e.g. two set-ups of a parallel make) instead of failing
  LOCK=(-o DPkg::Lock::Timeout=600)
  $SUDO apt-get "${LOCK[@]}" update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${LOCK[@]}" install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "$venv" = 1 ]; then
  req=tests/requirements.txt
  stamp=.venv/.plumb-requirements
  if [ ! -x .venv/bin/python ] || ! cmp -s "$req" "$stamp"; then
    echo "setup: creating .venv with $(tr '\n' ' ' < "$req")"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r "$req"
    cp "$req" "$stamp"
  fi
fi
