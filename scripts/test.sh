#!/usr/bin/env bash
# Sets up everything the tests need (venv, packages, Debian tools when root), then runs
# lint, format check, type check and the test suite. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  # xvfb: display tests; mosquitto: the MQTT tests start their own broker; openssl: their TLS certificates;
  # chromium + chromium-driver: the web page's browser test (Selenium); xdotool: the tune window's tests press its keys.
  # systemd: systemd-analyze verify/security for the service unit (and libseccomp, whose filter the tests reuse).
  # "install ok installed": a removed package keeps a dpkg record (config-files) that dpkg -s accepts
  for pkg in xvfb mosquitto openssl chromium chromium-driver xdotool systemd; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

.venv/bin/ruff check edgeseg tests scripts
.venv/bin/ruff format --check edgeseg tests scripts
.venv/bin/mypy edgeseg
# two workers: most of the suite waits (outages, reconnects, a browser); -n 0 as an argument runs it in one
.venv/bin/python -m pytest -q -n 2 "$@"
