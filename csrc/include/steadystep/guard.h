#pragma once

// Gradient guards: adaptive clipping policies whose state and decisions stay on the device.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <optional>
#include <string>

namespace steadystep {

/// Options of ZScoreClip: ZClip's (zclip 1.0.0, class ZClip) constructor arguments, same
/// names and defaults.
struct ZScoreClipOptions {
  /// EMA smoothing factor of the norm's mean and variance.
  TORCH_ARG(double, alpha) = 0.97;
  /// z-score above which a norm is a spike (percentile mode: the threshold is mean + z * std).
  TORCH_ARG(double, z_thresh) = 2.5;
  /// Cap on the clip-to value (also applied during warmup); nullopt: no cap.
  TORCH_ARG(std::optional<double>, max_grad_norm) = 1.0;
  /// Added to the standard deviation in the z-score.
  TORCH_ARG(double, eps) = 1e-6;
  /// Norms collected before the EMA is initialised (from their mean and variance).
  TORCH_ARG(int64_t, warmup_steps) = 25;
  /// "zscore" or "percentile" (lower case).
  TORCH_ARG(std::string, mode) = "zscore";
  /// zscore mode: "adaptive_scaling" (clip to mean + z_thresh * std / (z / z_thresh), times
  /// clip_factor) or "mean" (clip to the EMA mean). Ignored in percentile mode.
  TORCH_ARG(std::string, clip_option) = "adaptive_scaling";
  /// Multiplier of the adaptive_scaling threshold.
  TORCH_ARG(double, clip_factor) = 1.0;
  /// When true, a spike does not update the EMA.
  TORCH_ARG(bool, skip_update_on_spike) = false;
};

/// Length of the ZScoreClip state vector's warmup buffer: max(warmup_steps, 1).
int64_t zscore_clip_buffer_size(int64_t warmup_steps);

/// A fresh ZScoreClip state (fp64 vector, NOTE [ZScoreClip state] in csrc/ops/zscore_clip.cpp)
/// on `options`' device.
at::Tensor zscore_clip_state(int64_t warmup_steps, const at::TensorOptions& options = {});

/// One ZClip step on `grads` (in place), through the steadystep::zscore_clip_ op: takes their
/// L2 norm (or uses `total_norm`), updates `state`, scales the grads by the clip coefficient.
/// Returns the norm as clip_grad_norm_ does (0-dim, the grads' dtype). No host sync.
at::Tensor zscore_clip_(at::TensorList grads, const at::Tensor& state,
                        const ZScoreClipOptions& options,
                        const std::optional<at::Tensor>& total_norm = std::nullopt);

/// ZClip (Kumar et al. 2025) as a drop-in for clip_grad_norm_: clips the global gradient norm
/// to a threshold from an EMA z-score of past norms, with the same numbers as the reference
/// `zclip.ZClip` (up to the fp32 rounding of the norm itself) and no host synchronisation.
/// The state lives on the first gradient's device from the first clip_ call on.
class ZScoreClip {
 public:
  explicit ZScoreClip(ZScoreClipOptions options = {});

  /// Clips the gradients of `parameters` in place; returns their norm before clipping.
  at::Tensor clip_(at::TensorList parameters);
  /// The same on a list of gradients, optionally with their norm computed by the caller.
  at::Tensor clip_grads_(at::TensorList grads,
                         const std::optional<at::Tensor>& total_norm = std::nullopt);

  /// The state vector (undefined before the first step or load).
  const at::Tensor& state() const { return state_; }
  /// Steps taken, as a 0-dim fp64 device tensor.
  at::Tensor step_count() const;
  /// Last step's norm, clip coefficient (1: not clipped) and spike flag (bool), 0-dim device
  /// tensors, readable without a sync.
  at::Tensor last_norm() const;
  at::Tensor last_clip_coef() const;
  at::Tensor last_spike() const;
  /// EMA mean and variance of the norm (0 during warmup).
  at::Tensor mean() const;
  at::Tensor var() const;

  const ZScoreClipOptions& options() const { return options_; }

  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  at::Tensor slot(int64_t i) const;

  ZScoreClipOptions options_;
  at::Tensor state_;
};

}  // namespace steadystep
