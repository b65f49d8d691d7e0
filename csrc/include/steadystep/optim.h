#pragma once

#include <steadystep/guard.h>

#include <c10/util/intrusive_ptr.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/archive.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace c10d {
class ProcessGroup;  // torch/csrc/distributed/c10d/ProcessGroup.hpp
}  // namespace c10d

namespace steadystep {

/// Options of `FusedAdam`: torch::optim::AdamOptions' fields plus `maximize` and
/// `decoupled_weight_decay` (AdamW), and the optimizer-wide clipping settings: `max_grad_norm`
/// (empty: no clipping), `norm_type` (> 0 or inf) and `skip_nonfinite`. Clipping is global
/// over all param groups, so these three are set in the options the optimizer is constructed
/// with; a param group whose copy differs is refused (c10::ValueError at construction and at
/// every step), never silently ignored.
///
/// `process_group` (optimizer-wide too): the parameters are shards of a model split by hand over
/// the ranks of this c10d group (ZeRO-style). Every step then takes the norm of the gradients
/// over all ranks (steadystep::get_total_norm with the group: one all-reduce, no host sync)
/// whenever clipping or the guard needs it, so every rank clips by the same coefficient and
/// skips the same steps, and the shards never diverge. Every rank must call step(), also a rank
/// whose parameters have no gradient. Not part of an archive (a group is not training state):
/// a loaded optimizer keeps its own.
///
/// Low precision (optimizer-wide too, and in the archive; a LibTorch archive keeps the
/// optimizer's own values):
///   - `master_weights`: fp16/bf16 params get an fp32 master copy (the state's `master_param`,
///     made from the param at its first step, or at the first step after loading an archive
///     without one). The step updates the master in fp32 and writes the param as the master
///     rounded to nearest, in one pass: the masters are bitwise what the fp32 step computes on
///     fp32 copies of the params fed the same gradients. No effect on fp32/fp64 params.
///   - `stochastic_rounding`: bf16 params without a master are rounded from the fp32 result
///     stochastically (unbiased), with random bits drawn from `rounding_seed()`, the param's
///     position in the step and the step count (NOTE [Stochastic rounding]): reproducible, and
///     a resumed run rounds as the uninterrupted one. No effect on other dtypes. Refused
///     together with `master_weights` (the masters carry the precision then).
///   - `state_dtype` (kFloat or kBFloat16; unset: the param's dtype, or fp32 for params with a
///     master): the dtype exp_avg, exp_avg_sq and max_exp_avg_sq are kept in, for fp32, fp16
///     and bf16 params (fp64 params keep fp64). The math stays fp32; the state is written
///     rounded to nearest.
/// A refused combination, or a state_dtype other than these two, is a c10::ValueError at
/// construction (and at a step, for options changed since), before anything changes.
struct FusedAdamOptions : public torch::optim::OptimizerCloneableOptions<FusedAdamOptions> {
  FusedAdamOptions(double lr = 1e-3) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(bool, amsgrad) = false;
  TORCH_ARG(bool, maximize) = false;
  TORCH_ARG(bool, decoupled_weight_decay) = false;
  TORCH_ARG(std::optional<double>, max_grad_norm) = std::nullopt;
  TORCH_ARG(double, norm_type) = 2.0;
  TORCH_ARG(bool, skip_nonfinite) = true;
  TORCH_ARG(bool, master_weights) = false;
  TORCH_ARG(bool, stochastic_rounding) = false;
  TORCH_ARG(std::optional<c10::ScalarType>, state_dtype) = std::nullopt;
  /// Gradient guard policies (optimizer-wide, like the clipping settings): at most one clip
  /// policy (ZScoreClip, PercentileClip; then max_grad_norm must be unset), any skip policies
  /// (SpikeSkip), and AdaptiveGradClip. Decided on the device inside the step; their states are
  /// in the optimizer's archive. Shared, not copied: a group's options hold the same objects.
  TORCH_ARG(std::vector<std::shared_ptr<GradientGuard>>, guard) = {};

 public:
  // As TORCH_ARG(c10::intrusive_ptr<c10d::ProcessGroup>, process_group) would be, but kept as
  // the base class pointer: this header does not need the group's definition (c10d's headers).
  FusedAdamOptions& process_group(const c10::intrusive_ptr<c10d::ProcessGroup>& process_group);
  c10::intrusive_ptr<c10d::ProcessGroup> process_group() const;

  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }

 private:
  c10::intrusive_ptr<c10::intrusive_ptr_target> process_group_;
};

/// Per-parameter state of `FusedAdam`: torch's names; `step` is a one-element fp32 tensor on
/// the parameter's device, advanced by the step itself (never read back to the host while
/// training; an archive stores it as LibTorch's int64).
struct FusedAdamParamState
    : public torch::optim::OptimizerCloneableParamState<FusedAdamParamState> {
  TORCH_ARG(torch::Tensor, step);
  TORCH_ARG(torch::Tensor, exp_avg);
  TORCH_ARG(torch::Tensor, exp_avg_sq);
  TORCH_ARG(torch::Tensor, max_exp_avg_sq) = {};
  /// The fp32 master copy of an fp16/bf16 param (`master_weights`); undefined otherwise.
  TORCH_ARG(torch::Tensor, master_param) = {};

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

/// Options of `FusedSGD`: torch::optim::SGDOptions' fields plus `maximize`, and the
/// optimizer-wide clipping settings, `process_group` and low-precision settings
/// (`master_weights`, `stochastic_rounding`, `state_dtype`: the dtype of `momentum_buffer`), as
/// in `FusedAdamOptions`: the same in every group.
struct FusedSGDOptions : public torch::optim::OptimizerCloneableOptions<FusedSGDOptions> {
  FusedSGDOptions(double lr = 1e-3) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, momentum) = 0;
  TORCH_ARG(double, dampening) = 0;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(bool, nesterov) = false;
  TORCH_ARG(bool, maximize) = false;
  TORCH_ARG(std::optional<double>, max_grad_norm) = std::nullopt;
  TORCH_ARG(double, norm_type) = 2.0;
  TORCH_ARG(bool, skip_nonfinite) = true;
  TORCH_ARG(bool, master_weights) = false;
  TORCH_ARG(bool, stochastic_rounding) = false;
  TORCH_ARG(std::optional<c10::ScalarType>, state_dtype) = std::nullopt;
  /// Gradient guard policies (optimizer-wide, like the clipping settings): at most one clip
  /// policy (ZScoreClip, PercentileClip; then max_grad_norm must be unset), any skip policies
  /// (SpikeSkip), and AdaptiveGradClip. Decided on the device inside the step; their states are
  /// in the optimizer's archive. Shared, not copied: a group's options hold the same objects.
  TORCH_ARG(std::vector<std::shared_ptr<GradientGuard>>, guard) = {};

 public:
  // As TORCH_ARG(c10::intrusive_ptr<c10d::ProcessGroup>, process_group) would be, but kept as
  // the base class pointer: this header does not need the group's definition (c10d's headers).
  FusedSGDOptions& process_group(const c10::intrusive_ptr<c10d::ProcessGroup>& process_group);
  c10::intrusive_ptr<c10d::ProcessGroup> process_group() const;

  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }

 private:
  c10::intrusive_ptr<c10::intrusive_ptr_target> process_group_;
};

/// Per-parameter state of `FusedSGD`: torch's `momentum_buffer`, and a device `step` count of
/// the successful steps since the buffer was created: the first of them initialises the buffer
/// from the gradient, as torch does whenever a parameter has no buffer (first step, momentum
/// switched on mid-run, an archive without one).
struct FusedSGDParamState : public torch::optim::OptimizerCloneableParamState<FusedSGDParamState> {
  TORCH_ARG(torch::Tensor, step);
  TORCH_ARG(torch::Tensor, momentum_buffer) = {};
  /// The fp32 master copy of an fp16/bf16 param (`master_weights`); undefined otherwise.
  TORCH_ARG(torch::Tensor, master_param) = {};

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

/// What FusedAdam and FusedSGD share: the norm of the last step and the count of skipped
/// steps, both device tensors (nothing is read back to the host).
///
/// Archives (`torch::save` / `torch::load`) use LibTorch's optimizer layout, so that:
///   - a `torch::optim::Adam` or `AdamW` archive loads into `FusedAdam`, and a
///     `torch::optim::SGD` archive into `FusedSGD`, and training continues as LibTorch's
///     would (to fp32 rounding). LibTorch's archives do not say whether they are Adam or
///     AdamW, nor hold `maximize` or the clipping settings: such fields keep the loading
///     optimizer's own values, so construct `FusedAdam` with `decoupled_weight_decay(true)`
///     to resume an AdamW archive;
///   - `torch::optim::Adam`/`AdamW`/`SGD` load a `FusedAdam`/`FusedSGD` archive (steps are
///     written as int64); they ignore `maximize`, `decoupled_weight_decay` and the clipping
///     settings, which they do not have. Archives of earlier steadystep builds (fp32
///     tensor steps) load into steadystep only;
///   - loading replaces the state, the groups' options and `skipped_steps()` with the
///     archive's, and the optimizer-wide clipping and low-precision settings and
///     `rounding_seed()` with the archive's when it has them (a LibTorch archive: none of
///     these, and the count starts at zero); an archive of another optimizer, or of other
///     groups, is refused with a c10::Error naming what it holds, before anything changes.
///     Loaded state moves to its parameter's device and to the dtype this optimizer keeps it
///     in (the param's, as torch's load_state_dict does, unless `state_dtype` or a master says
///     otherwise); a master stays fp32. `save` reads the step counts back to the host.
class FusedOptimizer : public torch::optim::Optimizer {
 public:
  /// The fp32 0-dim norm of the gradients at the last step (undefined before the first step,
  /// or when neither clipping nor the guard needs it).
  const torch::Tensor& last_grad_norm() const { return last_grad_norm_; }
  /// Steps skipped (non-finite gradients, found_inf, a skip policy of the guard): an int64
  /// 0-dim tensor on the params' device.
  torch::Tensor skipped_steps() const;
  /// The last step's clip coefficient (1: not clipped) and whether it was skipped (bool), 0-dim
  /// device tensors (undefined before the first step); readable without a sync.
  torch::Tensor last_clip_coef() const;
  torch::Tensor last_skipped() const;
  /// The seed of stochastic rounding: drawn at construction when `stochastic_rounding` is on,
  /// from torch's default CPU generator (`torch::randint(0, 2^62)`, the draw the Python
  /// optimizer makes, so that torch::manual_seed gives both the same seed); 0 when it was
  /// never drawn, set or loaded. In the archive ("rounding_seed"), restored by load.
  int64_t rounding_seed() const { return rounding_seed_.value_or(0); }
  void rounding_seed(int64_t seed) { rounding_seed_ = seed; }

 protected:
  using torch::optim::Optimizer::Optimizer;
  /// The loss of `closure`, evaluated with grad mode on (undefined without a closure).
  static torch::Tensor evaluate(const LossClosure& closure);
  /// The skipped-steps counter, created on `device` at the first step.
  torch::Tensor& skipped_counter(const c10::Device& device);
  /// Writes the skipped-steps count into an archive (a top-level int64 that LibTorch's
  /// optimizers ignore), so that a resumed run keeps it.
  void save_skipped_steps(torch::serialize::OutputArchive& archive) const;
  /// The count an archive holds (none: LibTorch's archives), checked but not yet applied.
  static std::optional<int64_t> read_skipped_steps(torch::serialize::InputArchive& archive,
                                                   const std::string& who);
  /// Sets the count (none: zero), on the device of the first parameter.
  void restore_skipped_steps(std::optional<int64_t> count);
  /// What the fused op takes for a guard (NOTE [Guard policies]): the policies' states (on
  /// `device`), kinds and args. AdaptiveGradClip is not among them: it is applied here, to
  /// the gradients of `params` in place, before the step.
  struct GuardCall {
    std::vector<torch::Tensor> states;
    std::vector<std::string> kinds;
    std::vector<double> args;
  };
  static GuardCall prepare_guard(const std::vector<std::shared_ptr<GradientGuard>>& guard,
                                 const std::vector<torch::Tensor>& params,
                                 const c10::Device& device);
  /// The fp32[3] tensor the op writes [norm, clip coefficient, skipped] into.
  torch::Tensor& decisions(const c10::Device& device);
  /// The guard's states in an archive ("guard/<i>") and back.
  static void save_guard(torch::serialize::OutputArchive& archive,
                         const std::vector<std::shared_ptr<GradientGuard>>& guard);
  static void load_guard(torch::serialize::InputArchive& archive,
                         const std::vector<std::shared_ptr<GradientGuard>>& guard,
                         const std::string& who);
  /// Draws the seed (at construction, or at a step that finds stochastic rounding switched on
  /// and no seed).
  void draw_rounding_seed();
  /// What the op takes as `rounding_seed` (none: round to nearest).
  std::optional<int64_t> step_rounding_seed(bool stochastic_rounding);
  /// The seed in an archive (when one was drawn or set), and back (none: LibTorch's archives,
  /// or one without a seed: the optimizer keeps its own).
  void save_rounding_seed(torch::serialize::OutputArchive& archive) const;
  static std::optional<int64_t> read_rounding_seed(torch::serialize::InputArchive& archive,
                                                   const std::string& who);
  void restore_rounding_seed(std::optional<int64_t> seed) {
    if (seed) {
      rounding_seed_ = seed;
    }
  }
  /// Records what the fused op returned (an empty tensor: no norm was computed).
  void record_norm(const torch::Tensor& norm) {
    last_grad_norm_ = norm.numel() ? norm : torch::Tensor();
  }

 private:
  torch::Tensor last_grad_norm_;
  torch::Tensor skipped_steps_;
  torch::Tensor decisions_;
  std::optional<int64_t> rounding_seed_;
};

/// Adam (AdamW with `decoupled_weight_decay(true)`) with global-norm clipping over all its
/// parameters, fused into two multi-tensor passes: a norm pass, then one update pass that
/// reads param, grad and state once and writes them once.
///
/// Promises: equals `clip_grad_norm_` followed by torch's Adam/AdamW to fp32 rounding; never
/// synchronises the host with the device; with `skip_nonfinite`, a step whose gradient norm is
/// inf or nan leaves every parameter and state bit-identical, does not advance `step`, and
/// adds one to `skipped_steps()`, decided on the device. Works with every steadystep scheduler
/// and LibTorch's own (beta1 cycling included).
class FusedAdam : public FusedOptimizer {
 public:
  explicit FusedAdam(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                     FusedAdamOptions defaults = {});
  explicit FusedAdam(std::vector<torch::Tensor> params, FusedAdamOptions defaults = {})
      : FusedAdam({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

  torch::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
};

/// SGD (momentum, dampening, nesterov, weight decay, maximize) with global-norm clipping,
/// fused as `FusedAdam` is, with the same promises against torch's SGD.
class FusedSGD : public FusedOptimizer {
 public:
  explicit FusedSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                    FusedSGDOptions defaults = {});
  explicit FusedSGD(std::vector<torch::Tensor> params, FusedSGDOptions defaults = {})
      : FusedSGD({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

  torch::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
};

}  // namespace steadystep
