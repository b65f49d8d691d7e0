"""python -m steadystep.plot: the numbers it writes are the schedulers' own."""

import csv
import subprocess
import sys

import pytest
import torch

from steadystep import lr_scheduler as ss
from steadystep.plot import main


def test_csv_holds_the_schedule(tmp_path):
    out = tmp_path / "lr.csv"
    main(["CosineAnnealingLR", "StepLR", "--steps", "50", "--T_max", "20", "--step_size", "7", "--csv", str(out)])
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["step", "CosineAnnealingLR", "StepLR"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cosine = ss.CosineAnnealingLR(opt, 20)
    want = [0.1]
    for _ in range(50):
        opt.step()
        cosine.step()
        want.append(opt.param_groups[0]["lr"])
    assert [float(r[1]) for r in rows[1:]] == want
    assert float(rows[8][2]) == pytest.approx(0.01)  # StepLR decayed once at step 7


def test_png_overlays_several_schedules(tmp_path):
    out = tmp_path / "lr.png"
    result = subprocess.run(
        [sys.executable, "-m", "steadystep.plot", "WarmupCosineLR", "OneCycleLR", "--steps", "100",
         "--warmup_steps", "10", "--total_steps", "100", "--max_lr", "0.5", "-o", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clear_errors():
    with pytest.raises(SystemExit, match="--step_size"):
        main(["StepLR", "--steps", "5"])
    with pytest.raises(SystemExit, match="unknown or composite"):
        main(["NoSuchLR"])


def test_real_step_size_draws_torchs_schedule(tmp_path):
    # PyTorch's StepLR takes step_size=2.5 (decays at steps 5, 10, ...): the plot draws that.
    out = tmp_path / "lr.csv"
    main(["StepLR", "--steps", "20", "--step_size", "2.5", "--gamma", "0.5", "--csv", str(out)])
    rows = list(csv.reader(out.open()))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2.5, 0.5)
    want = [0.1]
    for _ in range(20):
        opt.step()
        sched.step()
        want.append(opt.param_groups[0]["lr"])
    assert [float(r[1]) for r in rows[1:]] == want


def test_bad_scheduler_argument_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["StepLR", "--steps", "5", "--step_size", "abc", "--csv", "/dev/null"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "step_size" in err and "'abc'" in err and "Traceback" not in err
