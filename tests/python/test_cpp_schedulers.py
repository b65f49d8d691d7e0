"""steadystep's C++ scheduler classes (the LibTorch frontend) against torch's Python sequence.

The test-only module `_scheduler_driver` (tests/cpp/scheduler_driver.cpp, built with the C++
tests) builds each C++ class from the same case spec as the Python tests and drives it on a
LibTorch optimizer. `make test` sets STEADYSTEP_REQUIRE_CPP_DRIVER=1, so a missing driver fails
there instead of skipping.
"""

import math

import pytest

from conftest import cpp_driver
from scheduler_cases import BASE_LRS, TORCH, as_kwargs, extra_cases, parity_cases, run
from steadystep import lr_scheduler as ss




driver = cpp_driver("_scheduler_driver", module_level=True)

PARITY = parity_cases(seed=0)
EXTRAS = extra_cases()


def cpp_run(case, resume_at=-1, path=""):
    return driver.run(as_kwargs(case.spec), case.optimizer, list(BASE_LRS), case.steps, case.step_values,
                      resume_at, path)


def assert_rows_close(ours, theirs, rel=1e-10):
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for col, (x, y) in enumerate(zip(a, b)):
            assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-12), (step, col, x, y)


@pytest.mark.parametrize("case", PARITY, ids=[f"{i:02d}-{c.name}" for i, c in enumerate(PARITY)])
def test_cpp_matches_torch_over_10000_steps(case):
    assert_rows_close(cpp_run(case), run(case, TORCH))


@pytest.mark.parametrize("case", EXTRAS, ids=[f"{i:02d}-{c.name}" for i, c in enumerate(EXTRAS)])
def test_cpp_extras_match_python(case):
    # Both frontends run the same C++ schedule math: the doubles agree exactly.
    assert cpp_run(case) == run(case, ss)


@pytest.mark.parametrize("case", PARITY + EXTRAS, ids=[f"{i:02d}-{c.name}" for i, c in enumerate(PARITY + EXTRAS)])
def test_cpp_save_load_resumes_identically(case, tmp_path):
    case.steps = min(case.steps, 1500)
    uninterrupted = cpp_run(case)
    resumed = cpp_run(case, resume_at=617, path=str(tmp_path / "ckpt"))
    assert resumed == uninterrupted


# BoundedLR inside SequentialLR (issue 11, item 16): the C++ classes restart the wrapped
# scheduler at the milestone, as torch restarts an unwrapped one.
from scheduler_cases import Case, Spec  # noqa: E402


def _sequential(second, first=None):
    first = first or Spec("LinearLR", (0.4,), {"total_iters": 2})
    return Spec("SequentialLR", ([first, second], [2]))


@pytest.mark.parametrize("inner", [Spec("ExponentialLR", (0.5,)), Spec("StepLR", (3, 0.5)),
                                   Spec("CosineAnnealingLR", (7,))])
def test_cpp_bounded_lr_inside_sequential_lr_restarts(inner):
    wide = Case(_sequential(Spec("BoundedLR", (inner, 0.0, 10.0))), steps=60)
    first = Case(_sequential(Spec("StepLR", (4,)), Spec("BoundedLR", (inner, 0.0, 10.0))), steps=60)
    for case, plain in [(wide, _sequential(inner)), (first, _sequential(Spec("StepLR", (4,)), inner))]:
        assert_rows_close(cpp_run(case), run(Case(plain, steps=60), TORCH))
    tight = Case(_sequential(Spec("BoundedLR", (inner, 0.02, 0.08))), steps=60)
    assert cpp_run(tight) == run(tight, ss)  # clamped: C++ and Python run the same math
