import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def devices() -> list:
    """CPU always; CUDA as a parameter that skips itself where there is no GPU."""
    return ["cpu", pytest.param("cuda", marks=CUDA)]


def cpp_driver(name: str, module_level: bool = False):
    """The pybind test driver `name` (tests/cpp/<name>.cpp) from the build under test; skips
    when it was not built, unless STEADYSTEP_REQUIRE_CPP_DRIVER=1 (make test) says it must be."""
    build = Path(os.environ.get("STEADYSTEP_BUILD_DIR", Path(__file__).resolve().parents[2] / "build")).resolve()
    sys.path.insert(0, str(build / "tests" / "cpp"))
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("STEADYSTEP_REQUIRE_CPP_DRIVER") == "1":
            raise
        pytest.skip(f"the C++ test driver is not built under {build} (configure with STEADYSTEP_BUILD_TESTS=ON)",
                    allow_module_level=module_level)
    finally:
        sys.path.pop(0)
