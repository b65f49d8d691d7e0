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


def test_python_demo_tells_the_same_story():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "exploding_gradients.py"),
                             "--steps", "300"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines() if "|" not in line}
    assert "DIVERGED" in lines["AdamW, constant lr"]
    assert "converged" in lines["FusedAdamW(max_grad_norm) + WarmupCosineLR"]
