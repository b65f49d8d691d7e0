# NOTE [One list of sources]: this is the only list of what libsteadystep is made of. The CMake
# build compiles it; setup.py drives this same CMake build and packages its output, so no
# source can be compiled by one build and forgotten by the other.
set(STEADYSTEP_SOURCES
  # Layer 1: schedule math (no torch::optim)
  csrc/schedules/cosine_annealing.cpp
  csrc/schedules/cosine_warm_restarts.cpp
  csrc/schedules/cyclic.cpp
  csrc/schedules/extras.cpp
  csrc/schedules/lambda.cpp
  csrc/schedules/one_cycle.cpp
  csrc/schedules/plateau.cpp
  csrc/schedules/step.cpp
  csrc/schedules/swa.cpp
  csrc/schedules/warmup.cpp
  # Layer 2: op schemas, composite ops and CPU/Meta kernels
  csrc/ops/schemas.cpp
  csrc/ops/get_total_norm.cpp
  csrc/ops/sharded_norm.cpp
  csrc/ops/clip_grad.cpp
  csrc/ops/zscore_clip.cpp
  csrc/ops/percentile_clip.cpp
  csrc/ops/agc.cpp
  csrc/ops/fused_optim.cpp
  csrc/ops/optim_checks.cpp
  csrc/cpu/registration.cpp
  csrc/cpu/agc_kernel.cpp
  csrc/meta/clip_grad_meta.cpp
  csrc/meta/agc_meta.cpp
  # Layer 3: the C++ frontend
  csrc/lr_scheduler/lr_scheduler.cpp
  csrc/lr_scheduler/optimizer_momentum.cpp
  csrc/lr_scheduler/composite_lr.cpp
  csrc/lr_scheduler/cosine_annealing_warm_restarts.cpp
  csrc/lr_scheduler/cyclic_lr.cpp
  csrc/lr_scheduler/reduce_lr_on_plateau.cpp
  csrc/optim/fused_optimizer.cpp
  csrc/optim/fused_adam.cpp
  csrc/optim/fused_sgd.cpp
  csrc/guard/policy.cpp
  csrc/guard/zscore_clip_policy.cpp
  csrc/guard/percentile_clip_policy.cpp
  csrc/guard/spike_skip_policy.cpp
  csrc/guard/gradient_guard.cpp
  csrc/guard/zscore_clip.cpp
  csrc/guard/percentile_clip.cpp
  csrc/guard/spike_skip.cpp
)
list(TRANSFORM STEADYSTEP_SOURCES PREPEND "${CMAKE_CURRENT_LIST_DIR}/../")

# Compiled once per CPU instruction set (NOTE [CPU ISA dispatch] in csrc/cpu/kernels.h).
set(STEADYSTEP_CPU_KERNEL_SOURCES
  csrc/cpu/kernels.cpp
  csrc/cpu/fused_optim_kernels.cpp
)
list(TRANSFORM STEADYSTEP_CPU_KERNEL_SOURCES PREPEND "${CMAKE_CURRENT_LIST_DIR}/../")

# Compiled only with STEADYSTEP_WITH_CUDA. The .cu files include no ATen headers (fast nvcc);
# the .cpp beside them is the torch-facing side (dispatcher registration, streams, allocation).
set(STEADYSTEP_CUDA_SOURCES
  cuda/total_norm.cu
  cuda/total_norm_cuda.cpp
  cuda/scale_clamp.cu
  cuda/scale_clamp_cuda.cpp
  cuda/agc.cu
  cuda/agc_cuda.cpp
  cuda/fused_adam.cu
  cuda/fused_sgd.cu
  cuda/fused_optim_cuda.cpp
)
list(TRANSFORM STEADYSTEP_CUDA_SOURCES PREPEND "${CMAKE_CURRENT_LIST_DIR}/../")
