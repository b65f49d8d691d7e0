"""steadystep: stable training steps for PyTorch and LibTorch.

Learning-rate schedulers that reproduce PyTorch's sequences (plus the schedules used for LLM
training), and multi-tensor, sync-free gradient-norm kernels. The work happens in C++:
``torch.ops.steadystep.*`` for the kernels and ``steadystep._C`` for the schedule math.
"""

import torch  # noqa: F401  (loads libtorch before our library needs it)

from . import _C  # loads libsteadystep, which registers torch.ops.steadystep
from . import lr_scheduler, optim
from .clip_grad import (
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)
from .guard import AdaptiveGradClip, PercentileClip, SpikeSkip, ZScoreClip

__version__: str = _C.__version__

__all__ = [
    "__version__",
    "AdaptiveGradClip",
    "PercentileClip",
    "SpikeSkip",
    "ZScoreClip",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "lr_scheduler",
    "optim",
]
