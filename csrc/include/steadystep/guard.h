#pragma once

// Gradient guards: adaptive clipping policies whose state and decisions stay on the device.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace steadystep {

/// A gradient-guard policy and its state: what `FusedAdamOptions::guard` /
/// `FusedSGDOptions::guard` hold, and the base of the standalone clippers. The policy's math is
/// a C++ function (NOTE [Guard policies] in csrc/guard/policy.h) run by the fused step or by
/// the policy's own op; its state is one fp64 device tensor, created on the gradients' device
/// at the first step, never read on the host while training.
class GradientGuard {
 public:
  virtual ~GradientGuard() = default;

  /// The policy's kind and its args, as the ops take them (`guards`, `guard_args`).
  virtual std::string kind() const = 0;
  virtual std::vector<double> args() const = 0;

  /// The state vector (undefined before the first step or load).
  const at::Tensor& state() const { return state_; }
  /// The state on `device`: created there (zeros) at the first step, moved there once after a
  /// load; the same tensor afterwards, updated in place by each step.
  const at::Tensor& state_on(const c10::Device& device);
  /// state_on the device a standalone clip step works on: total_norm's when given, else the
  /// first gradient's (CPU for none).
  const at::Tensor& state_for(at::TensorList grads, const std::optional<at::Tensor>& total_norm);

  /// Writes the kind, args and state; `load` checks that the archive holds this kind with
  /// args of the same state size (c10::ValueError otherwise, nothing changed) and restores
  /// the state, so the next step continues exactly where the saved one left off.
  virtual void save(torch::serialize::OutputArchive& archive) const;
  virtual void load(torch::serialize::InputArchive& archive);

 protected:
  /// Length of the state vector for these options.
  virtual int64_t state_size() const;
  /// Element `i` of the state (a 0-dim view); c10::Error before the first step.
  at::Tensor slot(int64_t i) const;
  /// Class name for messages.
  virtual const char* name() const = 0;

 private:
  at::Tensor state_;
};

/// Options of AdaptiveGradClip: timm.utils.adaptive_clip_grad's arguments, same defaults.
struct AdaptiveGradClipOptions {
  /// Each unit's gradient norm is capped at clip_factor * max(|unit of the weight|, eps).
  TORCH_ARG(double, clip_factor) = 0.01;
  TORCH_ARG(double, eps) = 1e-3;
  TORCH_ARG(double, norm_type) = 2.0;
};

/// AGC (NFNets) as a guard of the fused optimizers: before the norm pass, each unit of each
/// gradient is clipped relative to its weight (adaptive_clip_grad_, clip_grad.h), then the step
/// proceeds (non-finite guard, other policies) on the clipped gradients. No state. Not
/// combinable with a GradScaler (the scaled gradients would be clipped against unscaled
/// weights): the step refuses it.
class AdaptiveGradClip : public GradientGuard {
 public:
  explicit AdaptiveGradClip(AdaptiveGradClipOptions options = {});
  std::string kind() const override { return "agc"; }
  std::vector<double> args() const override;
  const AdaptiveGradClipOptions& options() const { return options_; }

 protected:
  int64_t state_size() const override { return 0; }
  const char* name() const override { return "AdaptiveGradClip"; }

 private:
  AdaptiveGradClipOptions options_;
};

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
class ZScoreClip : public GradientGuard {
 public:
  explicit ZScoreClip(ZScoreClipOptions options = {});
  std::string kind() const override { return "zscore"; }
  std::vector<double> args() const override;

  /// Clips the gradients of `parameters` in place; returns their norm before clipping.
  at::Tensor clip_(at::TensorList parameters);
  /// The same on a list of gradients, optionally with their norm computed by the caller.
  at::Tensor clip_grads_(at::TensorList grads,
                         const std::optional<at::Tensor>& total_norm = std::nullopt);

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

 protected:
  const char* name() const override { return "ZScoreClip"; }

 private:
  ZScoreClipOptions options_;
};

/// Options of PercentileClip: autoclip 0.2.1 QuantileClip's arguments, same names and defaults
/// (the global-threshold mode: one threshold for all gradients).
struct PercentileClipOptions {
  /// The quantile (in [0, 1]) of the norm history the gradients are clipped to.
  TORCH_ARG(double, quantile) = 0.9;
  /// How many of the last norms the history holds (> 0).
  TORCH_ARG(int64_t, history_length) = 1000;
};

/// A fresh PercentileClip state (fp64 vector, NOTE [PercentileClip state] in
/// csrc/guard/percentile_clip_policy.cpp) on `options`' device.
at::Tensor percentile_clip_state(int64_t history_length, const at::TensorOptions& options = {});

/// One AutoClip step on `grads` (in place), through the steadystep::percentile_clip_ op: takes
/// their L2 norm (or uses `total_norm`), clips them to the `quantile` of the norms in `state`'s
/// history (no clipping while it is empty), then records the norm. Returns the norm as
/// clip_grad_norm_ does (0-dim, the grads' dtype). No host sync.
at::Tensor percentile_clip_(at::TensorList grads, const at::Tensor& state,
                            const PercentileClipOptions& options,
                            const std::optional<at::Tensor>& total_norm = std::nullopt);

/// AutoClip (Seetharaman et al. 2020) as a drop-in for clip_grad_norm_: clips the global
/// gradient norm to the `quantile` (torch.quantile, linear) of the last `history_length` norms,
/// kept in a ring buffer on the device; the same numbers as autoclip's
/// `QuantileClip(global_threshold=True)` given the same norms, with no host synchronisation.
class PercentileClip : public GradientGuard {
 public:
  explicit PercentileClip(PercentileClipOptions options = {});
  std::string kind() const override { return "percentile"; }
  std::vector<double> args() const override;

  /// Clips the gradients of `parameters` in place; returns their norm before clipping.
  at::Tensor clip_(at::TensorList parameters);
  /// The same on a list of gradients, optionally with their norm computed by the caller.
  at::Tensor clip_grads_(at::TensorList grads,
                         const std::optional<at::Tensor>& total_norm = std::nullopt);

  /// Steps taken (0-dim fp64 device tensor).
  at::Tensor step_count() const;
  /// Last step's norm, the threshold it was clipped to (inf at the first step) and the clip
  /// coefficient (1: not clipped); 0-dim fp64 device tensors, readable without a sync.
  at::Tensor last_norm() const;
  at::Tensor last_threshold() const;
  at::Tensor last_clip_coef() const;

  const PercentileClipOptions& options() const { return options_; }

 protected:
  const char* name() const override { return "PercentileClip"; }

 private:
  PercentileClipOptions options_;
};

/// Options of SpikeSkip.
struct SpikeSkipOptions {
  /// Skip a step whose gradient norm is above this (from the first step); nullopt: no bound.
  TORCH_ARG(std::optional<double>, max_norm) = std::nullopt;
  /// Skip a step whose norm exceeds the window's mean by more than z_thresh standard
  /// deviations (unbiased); nullopt: no z-score rule. One of the two rules must be given.
  TORCH_ARG(std::optional<double>, z_thresh) = 6.0;
  /// How many of the last finite norms the statistics cover (>= 2).
  TORCH_ARG(int64_t, window) = 128;
  /// The z-score rule applies once the window holds this many norms (in [2, window]).
  TORCH_ARG(int64_t, warmup_steps) = 64;
};

/// Spike skipping (Megatron's grad_norm_skip_threshold, OLMo-core's z-score skip step) as a
/// skip policy of the fused optimizers: a step whose gradient norm is an outlier is skipped as
/// the non-finite guard skips one (params and state bit-identical, step not advanced,
/// skipped_steps + 1), decided on the device. Every finite norm enters the window, skipped ones
/// too, so a lasting shift of the norm stops being an outlier after a while (no stall).
class SpikeSkip : public GradientGuard {
 public:
  explicit SpikeSkip(SpikeSkipOptions options = {});
  std::string kind() const override { return "spike_skip"; }
  std::vector<double> args() const override;

  /// Norms seen (finite ones: those in the window so far), 0-dim fp64 device tensor.
  at::Tensor step_count() const;
  /// Last step's norm and whether it was skipped (bool), 0-dim device tensors.
  at::Tensor last_norm() const;
  at::Tensor last_skipped() const;
  /// Mean and standard deviation (unbiased) of the window the last norm was judged against
  /// (0 while the window holds fewer than 1 / 2 norms).
  at::Tensor mean() const;
  at::Tensor std() const;

  const SpikeSkipOptions& options() const { return options_; }

 protected:
  const char* name() const override { return "SpikeSkip"; }

 private:
  SpikeSkipOptions options_;
};

}  // namespace steadystep
