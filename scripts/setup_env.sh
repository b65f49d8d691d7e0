#!/usr/bin/env bash
# Installs what steadystep needs, idempotently: system tools from Debian (only when missing)
# and the project virtualenv .venv with torch==2.11.0 (only when requirements-dev.txt changed).
# A second run installs nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev googletest)
[ -f /usr/include/benchmark/benchmark.h ] || missing+=(libbenchmark-dev)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing from Debian: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
stamp=.venv/.requirements.sha256
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
  exit 0
fi
echo "setup: creating .venv and installing requirements-dev.txt (torch is a large download, cached by pip)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
echo "$want" > "$stamp"
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
