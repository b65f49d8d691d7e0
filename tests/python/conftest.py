import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def devices() -> list:
    """CPU always; CUDA as a parameter that skips itself where there is no GPU."""
    return ["cpu", pytest.param("cuda", marks=CUDA)]
