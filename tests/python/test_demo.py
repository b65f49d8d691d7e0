"""The main demo, shortened: its own numbers must say that plain Adam diverges and that the
steadystep configuration converges (examples/cpp/exploding_gradients.cpp), and the Python
twin must tell the same story."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("STEADYSTEP_BUILD_DIR", ROOT / "build")).resolve()
DEMO = BUILD / "examples" / "cpp" / "exploding_gradients"


@pytest.mark.skipif(not DEMO.exists() and os.environ.get("STEADYSTEP_REQUIRE_CPP_DRIVER") != "1",
                    reason=f"the C++ demo is not built under {BUILD}")
def test_cpp_demo_diverges_then_converges(tmp_path):
    result = subprocess.run([str(DEMO), "--steps", "300", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()
             if line.startswith(("Adam", "FusedAdam"))}
    assert "DIVERGED" in table["Adam, constant lr"]
    assert "converged" in table["FusedAdam(max_grad_norm) + WarmupCosineLR"]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 3 * 300
    plain = [float(r["loss"]) for r in rows if r["config"] == "1"]
    fused = [r for r in rows if r["config"] == "3"]
    assert not math.isfinite(plain[-1])  # plain Adam ends with nan weights
    assert sum(r["skipped"] == "1" for r in fused) > 0  # the guard skipped the bad batches
    assert all(math.isfinite(float(r["lr"])) for r in fused)


def test_cpp_demo_help():
    if not DEMO.exists():
        pytest.skip(f"the C++ demo is not built under {BUILD}")
    result = subprocess.run([str(DEMO), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--device" in result.stdout and "--steps" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr: 'nan' is not a finite number > 0"),
    (["--max-grad-norm", "nan"], "--max-grad-norm: 'nan' is not a finite number > 0"),
    (["--lr=-1"], "--lr: '-1' is not a finite number > 0"),
    (["--steps", "abc"], "--steps: 'abc' is not a whole number"),
    (["--steps", "12abc"], "--steps: '12abc' is not a whole number"),
    (["--steps"], "--steps needs a value"),
    (["--device", "tpu"], "--device: 'tpu' is not cpu or cuda"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
])
def test_cpp_demo_refuses_bad_arguments_with_usage_error(args, message, tmp_path):
    if not DEMO.exists():
        pytest.skip(f"the C++ demo is not built under {BUILD}")
    result = subprocess.run([str(DEMO), "--out", str(tmp_path), *args], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    # 2: a usage error, not an abort (-6) from an uncaught exception.
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr
    assert "terminate called" not in result.stderr
    assert not list(tmp_path.glob("core*"))


def test_cpp_demo_short_run_is_not_called_diverged(tmp_path):
    """20 steps: the losses are finite and falling, so no run may be labelled DIVERGED."""
    if not DEMO.exists():
        pytest.skip(f"the C++ demo is not built under {BUILD}")
    result = subprocess.run([str(DEMO), "--steps", "20", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith(("Adam", "FusedAdam"))]
    assert len(table) == 3
    for line in table:
        assert "DIVERGED" not in line and line.endswith("still training"), line


def test_python_demo_tells_the_same_story():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "exploding_gradients.py"),
                             "--steps", "300"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines() if "|" not in line}
    assert "DIVERGED" in lines["AdamW, constant lr"]
    assert "converged" in lines["FusedAdamW(max_grad_norm) + WarmupCosineLR"]
