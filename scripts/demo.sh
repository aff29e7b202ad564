#!/usr/bin/env bash
# The README's first command: set up .venv if needed, then run the demo pipeline (synthetic conveyor scene,
# no camera, no network) for 300 frames and print its speed and its accuracy against the scene's ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/edgeseg ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
exec .venv/bin/edgeseg run --max-frames 300 "$@"
