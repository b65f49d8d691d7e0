"""The Makefile's promises: `make demo` leaves a clone clean (it writes under demo_out/ only) and
`make demo-picture` is the one target that refreshes the README's tracked picture."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("STEADYSTEP_BUILD_DIR", ROOT / "build")).resolve()
DEMO = BUILD / "examples" / "cpp" / "exploding_gradients"
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]


def _clone_of_working_tree(dest: Path) -> Path:
    """A clone of HEAD with the working tree's tracked files on top, committed: a clean checkout
    of exactly what is being tested."""
    subprocess.run(GIT + ["clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / name)
    subprocess.run(GIT + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(GIT + ["commit", "-q", "--allow-empty", "-m", "working tree"], cwd=dest, check=True)
    return dest


def test_make_demo_leaves_the_clone_clean(tmp_path):
    if not DEMO.exists():
        if os.environ.get("STEADYSTEP_REQUIRE_CPP_DRIVER") == "1":
            pytest.fail(f"{DEMO} was not built")
        pytest.skip(f"the C++ demo is not built under {BUILD}")
    clone = _clone_of_working_tree(tmp_path / "clone")
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                          text=True, check=True).stdout == ""
    # -o build: the demo binary of this build is used as it is (no configure, no setup).
    result = subprocess.run(["make", "demo", "-o", "build", f"BUILD={BUILD}", f"PY={sys.executable}",
                             "DEMO_ARGS=--steps 30"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (clone / "demo_out" / "training.png").stat().st_size > 0
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"make demo changed the checkout:\n{status}"


def test_demo_picture_is_the_target_that_refreshes_the_readme_picture():
    recipe = subprocess.run(["make", "-n", "demo-picture", "-o", "build", "PY=python3"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    assert "docs/demo_training.png" in recipe
    demo = subprocess.run(["make", "-n", "demo", "-o", "build", "PY=python3"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert "docs/" not in demo
