"""The README's Python install, followed to the letter: a clean checkout (a clone of HEAD), a fresh
virtualenv from the system's python3 (its own old pip and setuptools, nothing else), the commands
of the README's install block run in order, then a clip + fused step with the installed package.

CPU only (STEADYSTEP_WITH_CUDA=0, the switch the README documents) to keep it to minutes: the
CUDA build is the main build's job. torch comes from pip's cache where `make setup` filled it;
without a network and without a cached or local torch wheel there is nothing to install from,
and the test says so and skips. It also skips, saying how much it needs, where the disk cannot
hold a second torch (its CUDA wheels are ~5 GiB installed): pip failing half-way for want of
space says nothing about the README."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH_WHEEL = re.compile(r"torch-2\.11\.0\b.*\.whl$")
STEP = """
import torch, steadystep
torch.manual_seed(0)
model = torch.nn.Linear(8, 2)
opt = steadystep.optim.FusedAdam(model.parameters(), lr=1e-2, max_grad_norm=0.5)
reference = torch.optim.Adam([p.detach().clone().requires_grad_() for p in model.parameters()], lr=1e-2)
x = torch.randn(32, 8)
model(x).pow(2).sum().backward()
for p, q in zip(model.parameters(), reference.param_groups[0]["params"]):
    q.grad = p.grad.clone()
norm = torch.nn.utils.clip_grad_norm_(reference.param_groups[0]["params"], 0.5)
assert torch.allclose(steadystep.get_total_norm([p.grad for p in model.parameters()]), norm)
opt.step()
reference.step()
for p, q in zip(model.parameters(), reference.param_groups[0]["params"]):
    torch.testing.assert_close(p, q)
print("installed", steadystep.__version__, "from", steadystep.__file__)
"""


def readme_install_commands() -> list[str]:
    """The lines of the README's Python install block, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", install, flags=re.S)
    (block,) = [b for b in blocks if "--no-build-isolation" in b]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def torch_is_installable() -> str | None:
    """None when pip can fetch torch 2.11.0; otherwise why not."""
    for directory in filter(None, os.environ.get("PIP_FIND_LINKS", "").split()):
        if Path(directory).is_dir() and any(TORCH_WHEEL.search(p.name) for p in Path(directory).iterdir()):
            return None
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    host = urllib.parse.urlparse(index).hostname or "pypi.org"
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return None
    except OSError as error:
        return f"offline ({host}: {error}) and no torch 2.11.0 wheel in PIP_FIND_LINKS: cannot install torch"


def disk_is_roomy_enough(work: Path) -> str | None:
    """None when `work`'s disk can hold another install of this interpreter's torch and its
    dependencies, with room for their wheels on the way in; otherwise why not."""
    import torch

    site = Path(torch.__file__).resolve().parents[1]
    installed = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    # The wheels are compressed; pip holds them (cache, unpack) while it installs.
    needed = installed + installed // 2
    free = shutil.disk_usage(work).free
    if free < needed:
        return f"{free / 2**30:.1f} GiB free under {work}; a fresh torch install needs about {needed / 2**30:.1f} GiB"
    return None


def test_readme_install_block_is_what_the_test_runs():
    commands = readme_install_commands()
    assert commands[-1].startswith("python -m pip install --no-build-isolation .")
    assert any("wheel" in c and "pybind11" in c for c in commands[:-1])


def test_readme_install_from_a_clean_checkout():
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    reason = torch_is_installable()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="steadystep-install-"))
    reason = disk_is_roomy_enough(work)
    if reason:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip(reason)
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "steadystep")], check=True, timeout=120)
        subprocess.run(["python3", "-m", "venv", str(work / "env")], check=True, timeout=120)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STEADYSTEP_", "VIRTUAL_ENV", "PYTHON")) and k not in ("MAX_JOBS",)}
        env.update(PATH=f"{work / 'env' / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(work / "env"),
                   STEADYSTEP_WITH_CUDA="0", MAX_JOBS="2")
        log = []
        for command in readme_install_commands():
            start = time.monotonic()
            result = subprocess.run(["bash", "-c", command], cwd=work / "steadystep", env=env,
                                    capture_output=True, text=True, timeout=1200)
            log.append(f"{command}: {time.monotonic() - start:.0f} s")
            assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        result = subprocess.run([str(work / "env" / "bin" / "python"), "-c", STEP], cwd=work, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert str(work / "env") in result.stdout  # the installed package, not the checkout
        print("\n".join(log))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_missing_build_tools_are_named():
    """setup.py names what a --no-build-isolation build lacks instead of failing on 'bdist_wheel'."""
    script = ("import runpy, sys\n"
              "class Absent:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.split('.')[0] in ('wheel', 'pybind11') or name == 'setuptools.command.bdist_wheel':\n"
              "            raise ModuleNotFoundError(name)\n"
              "sys.meta_path.insert(0, Absent())\n"
              "sys.argv = ['setup.py', 'bdist_wheel']\n"
              f"runpy.run_path({str(ROOT / 'setup.py')!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "python -m pip install wheel pybind11" in result.stderr
