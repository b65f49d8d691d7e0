"""The README's quick starts are the example programs, verbatim, and they run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("STEADYSTEP_BUILD_DIR", ROOT / "build")).resolve()
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("path", ["examples/cpp/quickstart.cpp", "examples/python/quickstart.py"])
def test_readme_shows_the_example_verbatim(path):
    assert (ROOT / path).read_text() in README


def test_python_quickstart_runs(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples/python/quickstart.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "grad norm" in result.stdout


def test_cpp_quickstart_runs(tmp_path):
    program = BUILD / "examples" / "cpp" / "quickstart"
    if not program.exists():
        if os.environ.get("STEADYSTEP_REQUIRE_CPP_DRIVER") == "1":
            pytest.fail(f"{program} was not built")
        pytest.skip(f"{program} is not built")
    result = subprocess.run([str(program)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "grad norm" in result.stdout and (tmp_path / "quickstart_opt.pt").exists()
