#!/usr/bin/env bash
# The test command: set up .venv if needed, then lint, format check and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${PIX2PIX_ILM_VENV:-.venv}"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
# Two pytest workers (pytest-xdist): most tests wait on subprocesses (torchrun, servers, the browser), so two
# workers halve the suite's wall time on 2 cores; pass -n 0 to run serially (e.g. with --pdb).
"$venv/bin/python" -m pytest -n 2 "$@"
