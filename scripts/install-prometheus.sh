#!/usr/bin/env bash
# Installs Prometheus (`prometheus` and `promtool`) from Debian's archive,
# unless both are already on PATH. The observability test
# (tests/e2e_observability.rs) runs this when they are missing.
# Idempotent. Needs root (or sudo without a password) and apt-get.
# Exit codes: 0 installed or already there; 1 the install failed; 2 it cannot
# be attempted here (no apt-get, not root).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: no apt-get on this machine; install Prometheus 2.x (prometheus, promtool) by hand" >&2
  exit 2
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-prometheus: not root and no password-less sudo; run: apt-get install -y prometheus" >&2
    exit 2
  fi
fi
echo "installing prometheus from Debian (apt-get install --no-install-recommends prometheus)" >&2
# The package would start a system-wide Prometheus on :9090 where services
# can start; the tests run their own. Keep the daemon from starting.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  ADDED_POLICY=1
fi
cleanup() { if [ "$ADDED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
  # The package lists may be missing or stale.
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
prometheus --version 2>&1 | head -n 1 >&2
promtool --version 2>&1 | head -n 1 >&2
