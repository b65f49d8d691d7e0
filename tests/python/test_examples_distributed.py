"""examples/python/fsdp_train.py runs under torchrun on 2 CPU ranks (gloo) as the README shows,
prints loss, grad norm and lr per step, and trains: the loss falls and the lr follows
WarmupCosineLR."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "python" / "fsdp_train.py"
STEP_LINE = re.compile(r"^step\s+(\d+)\s+loss (\S+)\s+grad_norm (\S+)\s+lr (\S+)$", re.M)


def test_readme_shows_the_torchrun_command():
    readme = (ROOT / "README.md").read_text()
    distributed = readme.split("\n## Distributed\n", 1)[1].split("\n## ", 1)[0]
    assert "torchrun --nproc_per_node 2 examples/python/fsdp_train.py" in distributed


def test_fsdp_example_trains_on_two_gloo_ranks(tmp_path):
    steps, warmup, lr = 12, 2, 3e-3
    # --standalone: a rendezvous on a free port, so concurrent runs on one machine do not collide.
    # max_grad_norm 0.5 is below this run's norms (0.52-0.70): every step clips with the global norm.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(EXAMPLE), "--steps", str(steps), "--warmup", str(warmup), "--lr", str(lr), "--device", "cpu",
               "--max-grad-norm", "0.5"]
    # A hung rank must fail the test, not stall it, and leave nothing running: at the deadline
    # torchrun gets SIGTERM, on which it stops its workers (they run in sessions of their own, so
    # killing torchrun alone would orphan them). Output goes to files: a pipe held open by a
    # worker would block the read.
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err, text=True)
        timed_out = False
        try:
            process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if timed_out:
        pytest.fail("the example did not finish in 180 s:\n" + stdout[-3000:] + stderr[-6000:])
    assert process.returncode == 0, stdout[-3000:] + stderr[-6000:]
    assert "2 ranks, gloo on cpu" in stdout

    rows = [(int(s), float(loss), float(norm), float(rate)) for s, loss, norm, rate in STEP_LINE.findall(stdout)]
    assert [r[0] for r in rows] == list(range(1, steps + 1)), stdout  # rank 0 prints, once a step
    losses = [r[1] for r in rows]
    norms = [r[2] for r in rows]
    assert all(math.isfinite(x) for x in losses + norms)
    assert all(n > 0.5 for n in norms), norms  # so every step clipped
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.05, losses
    # The lr each step used: transformers' cosine schedule with linear warmup from 0.
    expected = [lr * t / warmup if t < warmup else
                lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup))) for t in range(steps)]
    assert [r[3] for r in rows] == [float(f"{x:.3e}") for x in expected]
    assert "skipped steps: 0" in stdout
