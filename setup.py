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
