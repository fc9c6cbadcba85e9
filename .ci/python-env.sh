#!/usr/bin/env bash
# The Python environment the Python tests and benchmark run in: a virtual environment under
# $HOME/.cache/rackpoint-venv (kept between runs), with torch, numpy, maturin and pytest.
# Idempotent: when everything already imports it returns at once. Sourced or run; when sourced
# it leaves RACKPOINT_VENV and RACKPOINT_PYTHON set.
set -euo pipefail
RACKPOINT_VENV="${RACKPOINT_VENV:-$HOME/.cache/rackpoint-venv}"
if [ ! -x "$RACKPOINT_VENV/bin/python" ]; then
  echo "creating the Python environment in $RACKPOINT_VENV" >&2
  python3 -m venv "$RACKPOINT_VENV"
fi
RACKPOINT_PYTHON="$RACKPOINT_VENV/bin/python"
if ! "$RACKPOINT_PYTHON" -c 'import torch, numpy, maturin, pytest' 2>/dev/null; then
  # PyPI's Linux torch wheel is a CUDA build (about 3 GB with its dependencies); it runs on
  # the CPU as well, which is all the tests need.
  echo "installing torch, numpy, maturin and pytest into $RACKPOINT_VENV (a few GB, once)" >&2
  "$RACKPOINT_PYTHON" -m pip install --quiet --upgrade pip
  "$RACKPOINT_PYTHON" -m pip install --quiet torch numpy maturin pytest
  "$RACKPOINT_PYTHON" -c 'import torch, numpy, maturin, pytest'
fi
export RACKPOINT_VENV RACKPOINT_PYTHON
