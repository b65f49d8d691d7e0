#!/usr/bin/env bash
# Runs every test: GoogleTest (and the find_package consumer) through ctest, then pytest.
# Both always run and print their summaries; the exit code fails if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUILD=${BUILD:-build}

echo "== ctest"
ctest --test-dir "$BUILD" --output-on-failure -j "${CTEST_JOBS:-2}"
ctest_rc=$?

echo "== pytest"
STEADYSTEP_BUILD_DIR="$BUILD" STEADYSTEP_REQUIRE_CPP_DRIVER=1 "$PY" -m pytest tests/python -q -p no:warnings --durations=15
pytest_rc=$?
# pytest exits 5 when it collected nothing: that is a failure of the suite, not a pass.

echo "== summary: ctest exit ${ctest_rc}, pytest exit ${pytest_rc}"
[ "$ctest_rc" -eq 0 ] && [ "$pytest_rc" -eq 0 ]
