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


@pytest.fixture(scope="module")
def demo_300(tmp_path_factory):
    """One 300-step run of the C++ demo: its table (line by configuration) and metrics.csv rows."""
    if not DEMO.exists() and os.environ.get("STEADYSTEP_REQUIRE_CPP_DRIVER") != "1":
        pytest.skip(f"the C++ demo is not built under {BUILD}")
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run([str(DEMO), "--steps", "300", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    # The demo itself checks that each fused step's skipped decision and skipped_steps() agree
    # with its log (it exits 1 otherwise).
    assert result.returncode == 0, result.stderr
    table = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()
             if line.startswith(("Adam", "FusedAdam", "spikes:"))}
    return table, list(csv.DictReader((out / "metrics.csv").open()))


def test_cpp_demo_diverges_then_converges(demo_300):
    table, all_rows = demo_300
    assert "DIVERGED" in table["Adam, constant lr"]
    assert "converged" in table["FusedAdam(max_grad_norm) + WarmupCosineLR"]
    rows = [r for r in all_rows if r["scenario"] == "inf"]
    assert len(rows) == 3 * 300 and {r["config"] for r in rows} == {"1", "2", "3"}
    plain = [float(r["loss"]) for r in rows if r["config"] == "1"]
    fused = [r for r in rows if r["config"] == "3"]
    assert not math.isfinite(plain[-1])  # plain Adam ends with nan weights
    assert sum(r["skipped"] == "1" for r in fused) > 0  # the guard skipped the bad batches
    assert all(math.isfinite(float(r["lr"])) for r in fused)


SPIKE_CONFIGS = {"4": "spikes: FusedAdam, no clipping", "5": "spikes: FusedAdam(max_grad_norm)",
                 "6": "spikes: FusedAdam(guard=ZScoreClip)",
                 "7": "spikes: FusedAdam(max_grad_norm, SpikeSkip)"}


def table_numbers(line):
    """(val loss, max |grad|, clipped, skipped) of a table line."""
    fields = line[44:].split()
    return float(fields[0]), float(fields[2]), int(fields[3]), int(fields[4])


def test_cpp_demo_finite_spikes(demo_300):
    """The finite-spike scenario: the same corrupted records x1000. Nothing is non-finite; the
    unclipped run takes the spikes at full strength, the clip policies bound them, SpikeSkip
    skips only corrupted batches, and the table agrees with metrics.csv."""
    table, all_rows = demo_300
    rows = [r for r in all_rows if r["scenario"] == "finite"]
    assert len(rows) == 4 * 300
    runs = {c: [r for r in rows if r["config"] == c] for c in SPIKE_CONFIGS}
    assert all(len(run) == 300 for run in runs.values())
    corrupted = [r["corrupted"] for r in runs["4"]]
    assert all([r["corrupted"] for r in run] == corrupted for run in runs.values())
    assert corrupted.count("1") >= 3  # the scenario has spikes to handle
    for config, run in runs.items():
        assert all(math.isfinite(float(r[k])) for r in run for k in ("loss", "grad_norm")), config
        val, top, clipped, skipped = table_numbers(table[SPIKE_CONFIGS[config]])
        assert math.isfinite(val), config
        assert top == pytest.approx(max(float(r["grad_norm"]) for r in run), rel=1e-3)
        assert clipped == sum(r["clipped"] == "1" for r in run), config
        assert skipped == sum(r["skipped"] == "1" for r in run), config
    unclipped = table_numbers(table[SPIKE_CONFIGS["4"]])
    assert unclipped[2] == 0 and unclipped[3] == 0 and unclipped[1] > 100  # full-strength spikes
    for config in ("5", "6"):
        assert table_numbers(table[SPIKE_CONFIGS[config]])[3] == 0  # clip policies never skip
    for r in runs["5"]:  # max_grad_norm=1.0 clips exactly the steps whose norm is above it
        norm = float(r["grad_norm"])
        if abs(norm - 1.0) > 1e-5:
            assert (r["clipped"] == "1") == (norm > 1.0), r
    skip = runs["7"]
    skipped_at = [i for i, r in enumerate(skip) if r["skipped"] == "1"]
    assert skipped_at, "SpikeSkip skipped nothing"
    assert all(skip[i]["corrupted"] == "1" for i in skipped_at)  # only spikes are skipped
    # Until its first skip, SpikeSkip changes nothing: the run equals max_grad_norm alone.
    first = skipped_at[0]
    assert [r["loss"] for r in skip[:first + 1]] == [r["loss"] for r in runs["5"][:first + 1]]
    # Every clipping configuration ends well below the unclipped one on the clean held-out set.
    for config in ("5", "6", "7"):
        assert table_numbers(table[SPIKE_CONFIGS[config]])[0] < 0.5 * unclipped[0], config


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
    spikes = [line for line in result.stdout.splitlines() if line.startswith("spikes:")]
    assert len(spikes) == 4
    for line in table + spikes:
        assert "DIVERGED" not in line and line.endswith("still training"), line


def test_python_demo_tells_the_same_story():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "exploding_gradients.py"),
                             "--steps", "300"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines() if "|" not in line}
    assert "DIVERGED" in lines["AdamW, constant lr"]
    assert "converged" in lines["FusedAdamW(max_grad_norm) + WarmupCosineLR"]
    spikes = {name: line.split() for name, line in lines.items() if name.startswith("spikes:")}
    assert len(spikes) == 4
    assert all(math.isfinite(float(fields[-3])) for fields in spikes.values())  # val loss
    skipped = {name: int(fields[-2]) for name, fields in spikes.items()}
    assert skipped["spikes: FusedAdamW(max_grad_norm, SpikeSkip)"] > 0
    assert skipped["spikes: FusedAdamW(max_grad_norm)"] == skipped["spikes: FusedAdamW(guard=ZScoreClip)"] == 0
