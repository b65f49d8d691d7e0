#!/usr/bin/env bash
# `make gpu-check`: the whole CUDA story on a machine with an NVIDIA GPU, in one command.
#
#   build     the C++ library, GoogleTest and the Python extension for TORCH_CUDA_ARCH_LIST (9.0)
#   ctest     every GoogleTest case; a case skipped for want of CUDA fails the stage
#   pytest    every pytest case; a case skipped for want of CUDA fails the stage
#   sanitize  compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over every CUDA op
#             path at small sizes (tests/python/cuda_sanitize_cases.py) and the CUDA GoogleTest
#             cases; any report fails the stage
#   bench     the benchmarks, steadystep beside torch, on the GPU
#
# Each stage writes its whole log under LOGS; a short table comes last. STAGES picks stages (the
# device tool's 10-minute calls: `STAGES="build ctest"` in one call, `STAGES=pytest` in the next;
# the build stays between calls while the machine is warm). On the lent GPU machines (no
# internet, no GoogleTest): `cp -r /usr/src/googletest gtest-src` here and carry gtest-src; carry
# .whl (the test-only wheels, docs/BUILDING.md) so that the reference-implementation tests run.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
STAGES=${STAGES:-build ctest pytest sanitize bench}
LOGS=${LOGS:-${OUT:-gpu_check_out}}
SANITIZER=${SANITIZER:-compute-sanitizer}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export STEADYSTEP_BUILD_DIR=$BUILD PYTHONUNBUFFERED=1
[ -d gtest-src ] && export STEADYSTEP_GTEST_SOURCE=${STEADYSTEP_GTEST_SOURCE:-$PWD/gtest-src}
mkdir -p "$LOGS"

# Test-only wheels carried in .whl (zclip, autoclip, ...): installed beside the interpreter's
# packages, never over them.
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/steadystep-site \
    .whl/*.whl >"$LOGS/wheels.log" 2>&1 && export PYTHONPATH=/tmp/steadystep-site${PYTHONPATH:+:$PYTHONPATH}
fi

rows=()
failed=0
# run NAME DETAIL-COMMAND COMMAND...: runs COMMAND into LOGS/NAME.log; DETAIL-COMMAND reads the
# log and prints the table's one-line summary of it.
run() {
  local name=$1 detail=$2
  shift 2
  echo "== $name: $*"
  local start=$SECONDS rc
  "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  local summary
  summary=$($detail "$LOGS/$name.log" "$rc")
  [ "$rc" -eq 0 ] || failed=1
  rows+=("$(printf '%-22s %-5s %6ss  %s' "$name" "$([ "$rc" -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - start)) "$summary")")
  tail -n 3 "$LOGS/$name.log"
  return $rc
}

last_line() { grep -v '^\s*$' "$1" | tail -n 1; }
ctest_line() { grep -E "tests passed|tests failed" "$1" | tail -n 1; }
pytest_line() { grep -E "(passed|failed|skipped|error).* in [0-9.]+s" "$1" | tail -n 1 | tr -d '='; }
sanitizer_line() { grep -E "ERROR SUMMARY" "$1" | paste -sd ';' -; }

# A skip for want of CUDA on a machine that has CUDA is a failure: the point is to run them.
no_cuda_skips() {
  local log=$1 count
  count=$(grep -cE "\(Skipped\)|SKIPPED.*no CUDA device" "$log")
  [ "$count" -eq 0 ] || { echo "$count line(s) of skips for want of CUDA:"; grep -E "\(Skipped\)|SKIPPED.*no CUDA" "$log"; return 1; }
}

stage_env() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || return 1
  $PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(), \
torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')" || return 1
  nvcc --version | tail -n 2
  $SANITIZER --version | head -n 2
}

stage_build() { make python PY="$PY" SETUP=true BUILD="$BUILD" JOBS="$JOBS"; }

stage_ctest() {
  ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" >"$LOGS/ctest.raw" 2>&1
  local rc=$?
  cat "$LOGS/ctest.raw"
  no_cuda_skips "$LOGS/ctest.raw" || rc=1
  return $rc
}

stage_pytest() {
  STEADYSTEP_REQUIRE_CPP_DRIVER=1 $PY -m pytest tests/python -q -rs -p no:warnings -p no:cacheprovider \
    >"$LOGS/pytest.raw" 2>&1
  local rc=$?
  cat "$LOGS/pytest.raw"
  no_cuda_skips "$LOGS/pytest.raw" || rc=1
  return $rc
}

# One sanitizer tool over the Python cases and the CUDA GoogleTest cases. memcheck checks every
# kernel of the process; the other tools only ours (their cost is per instrumented access).
stage_sanitize_tool() {
  local tool=$1 filter=()
  [ "$tool" = memcheck ] || filter=(--kernel-name kns=steadystep)
  # No --leak-check: torch's caching allocator keeps its device memory until the process ends.
  local common=(--tool "$tool" --error-exitcode 1 --print-limit 20 "${filter[@]}")
  local rc=0
  $SANITIZER "${common[@]}" $PY tests/python/cuda_sanitize_cases.py || rc=1
  $SANITIZER "${common[@]}" "$BUILD/tests/cpp/steadystep_tests" --gtest_filter='*Cuda*' || rc=1
  return $rc
}

stage_bench() {
  local rc=0
  $PY benchmarks/bench_step.py --device cuda --sets gpt2,gpt2xl,small --json "$LOGS/bench_step.json" || rc=1
  $PY benchmarks/bench_clip.py --device cuda || rc=1
  $PY benchmarks/bench_precision.py --device cuda --passes 2 || rc=1
  return $rc
}

run env last_line stage_env || { echo "no usable GPU: nothing else runs"; exit 1; }
for stage in $STAGES; do
  case $stage in
    build) run build last_line stage_build || { failed=1; break; } ;;
    ctest) run ctest ctest_line stage_ctest ;;
    pytest) run pytest pytest_line stage_pytest ;;
    sanitize) for tool in memcheck racecheck initcheck synccheck; do
                run "sanitize-$tool" sanitizer_line stage_sanitize_tool "$tool"
              done ;;
    bench) run bench last_line stage_bench ;;
    *) echo "unknown stage: $stage (build ctest pytest sanitize bench)"; exit 2 ;;
  esac
done

# The benchmark tables, then the verdicts: the reply of a remote call carries the end.
[ -f "$LOGS/bench.log" ] && cat "$LOGS/bench.log"
echo
echo "gpu-check ($(date -u +%F), logs in $LOGS):"
printf '%s\n' "${rows[@]}"
exit $failed
