"""Builds the Python package by driving the project's one CMake build.

NOTE [Compile once]: the C++ library, the CUDA kernels and steadystep._C are all built by
CMake from cmake/sources.cmake; this file configures that build (in ``build/`` unless
STEADYSTEP_BUILD_DIR says otherwise, so `make` and pip share one build), installs it into a
staging prefix, and packages ``libsteadystep`` beside ``_C``. Install with
``pip install --no-build-isolation .`` (or ``-e .``) into an environment that has torch.
Options come from the environment: STEADYSTEP_WITH_CUDA, TORCH_CUDA_ARCH_LIST,
STEADYSTEP_BUILD_DIR, MAX_JOBS.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def project_version() -> str:
    match = re.search(r"project\(steadystep VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text())
    assert match, "CMakeLists.txt declares the version"
    return match.group(1)


LIBRARY_SONAME = "libsteadystep.so." + project_version().split(".")[0]

BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def check_build_requirements() -> None:
    """With --no-build-isolation pip installs none of pyproject's build requirements: name the
    missing ones (setuptools < 70.1 would otherwise fail with "invalid command 'bdist_wheel'")."""
    import importlib.util

    def importable(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ImportError:
            return False

    missing = []
    # setuptools >= 70.1 has bdist_wheel itself; older ones take it from the wheel package.
    if not importable("wheel") and not importable("setuptools.command.bdist_wheel"):
        missing.append("wheel")
    missing += [module for module in ("pybind11", "torch") if not importable(module)]
    if shutil.which("cmake") is None:
        missing.append("cmake")
    if missing:
        sys.exit(f"steadystep: the build needs {', '.join(missing)} in this environment (pip installs no build "
                 f"requirements with --no-build-isolation): python -m pip install {' '.join(missing)}; "
                 "see README.md, Install")


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = Path(os.environ.get("STEADYSTEP_BUILD_DIR", ROOT / "build")).resolve()
        stage = build_dir / "python-stage"
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            f"-DPython_EXECUTABLE={sys.executable}", "-DSTEADYSTEP_BUILD_PYTHON=ON",
        ]
        if not (build_dir / "CMakeCache.txt").exists() and shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "steadystep", "_C", "-j", jobs], check=True)
        shutil.rmtree(stage, ignore_errors=True)
        subprocess.run(["cmake", "--install", str(build_dir), "--prefix", str(stage)], check=True)

        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        (module,) = (stage / "python" / "steadystep").glob("_C*.so")
        shutil.copyfile(module, target)
        # _C finds libsteadystep beside itself ($ORIGIN), under its soname.
        library = next(p for p in (stage / "lib").glob("libsteadystep.so.*") if not p.is_symlink())
        shutil.copyfile(library, target.parent / LIBRARY_SONAME)

    def copy_extensions_to_source(self) -> None:
        # Editable installs copy the extension into the source tree; the library goes with it.
        super().copy_extensions_to_source()
        package_dir = Path(self.get_finalized_command("build_py").get_package_dir("steadystep"))
        shutil.copyfile(Path(self.build_lib) / "steadystep" / LIBRARY_SONAME, package_dir / LIBRARY_SONAME)

    def get_outputs(self) -> list[str]:
        return super().get_outputs() + [str(Path(self.build_lib) / "steadystep" / LIBRARY_SONAME)]


if BUILD_COMMANDS.intersection(sys.argv[1:]):
    check_build_requirements()

setup(
    name="steadystep",
    version=project_version(),
    description="Stable training steps: PyTorch-exact LR schedulers and fused, sync-free clip + optimizer kernels",
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"steadystep": ["py.typed"]},
    ext_modules=[CMakeExtension("steadystep._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=["torch"],
    zip_safe=False,
)
