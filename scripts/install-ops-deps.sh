#!/usr/bin/env bash
# Installs what the operator checks need: Debian's Prometheus (prometheus + promtool), compose v1
# (docker-compose) for `config` validation, curl, and g++ for the CUDA kernels' CPU emulator.
# Idempotent: a tool that is already on PATH is not reinstalled, and `apt-get update` runs at
# most once, only when something is missing.
#
#   scripts/install-ops-deps.sh            # prometheus, promtool, docker-compose, curl, g++
#   scripts/install-ops-deps.sh --docker   # also docker.io + debootstrap (compose smoke test)
#
# Each step prints one line with its wall time, so CI logs show where the time went.
# Python: the checkers use the 3.11 standard library only, so nothing is installed from PyPI.
set -euo pipefail

want_docker=0
for arg in "$@"; do
  case "$arg" in
    --docker) want_docker=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-ops-deps: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

step() { # step NAME CMD...: runs CMD quietly, prints NAME and its wall time, shows output on failure
  local name="$1"; shift
  local t0 t1 log
  log="$(mktemp)"
  t0=$(date +%s%N)
  if ! "$@" >"$log" 2>&1; then
    echo "install-ops-deps: step '$name' failed:" >&2
    tail -n 40 "$log" >&2
    rm -f "$log"
    return 1
  fi
  t1=$(date +%s%N)
  rm -f "$log"
  local ms=$(( (t1 - t0) / 1000000 ))
  printf 'install-ops-deps: %s: %d.%01d s\n' "$name" $((ms / 1000)) $(((ms % 1000) / 100))
}

# command-on-PATH -> Debian package providing it
declare -a pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need prometheus prometheus
need promtool prometheus
need docker-compose docker-compose
need curl curl
# The CUDA kernels' CPU emulator (cuda/tests/llm_emu.rs) is built with g++ (C++20).
need g++ g++
if [ "$want_docker" = 1 ]; then
  need dockerd docker.io
  need debootstrap debootstrap
fi

if [ "${#pkgs[@]}" -eq 0 ]; then
  echo "install-ops-deps: everything already installed"
else
  # de-duplicate (prometheus provides two tools)
  mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
  step "apt-get update" $SUDO apt-get update -qq
  step "install ${pkgs[*]}" $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

# Debian's prometheus package tries to start a service; there is no init here, which is fine:
# the checks start their own Prometheus on loopback.
for tool in prometheus promtool docker-compose curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-ops-deps: $tool still missing" >&2; exit 1; }
done
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || { echo "install-ops-deps: python3 >= 3.9 required" >&2; exit 1; }
if [ "$want_docker" = 1 ]; then
  for tool in dockerd debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-ops-deps: $tool still missing" >&2; exit 1; }
  done
fi
