#pragma once

#include <steadystep/schedules/cosine_annealing.h>
#include <steadystep/schedules/cosine_warm_restarts.h>
#include <steadystep/schedules/cyclic.h>
#include <steadystep/schedules/extras.h>
#include <steadystep/schedules/lambda.h>
#include <steadystep/schedules/one_cycle.h>
#include <steadystep/schedules/plateau.h>
#include <steadystep/schedules/schedule.h>
#include <steadystep/schedules/step.h>
#include <steadystep/schedules/swa.h>
#include <steadystep/schedules/warmup.h>

#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/archive.h>

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace steadystep {

/// A param group's `initial_lr`, as PyTorch keeps it in `group["initial_lr"]`: the lr the first
/// scheduler built on the group started from, which later schedulers take as their base lr.
/// Without `set`, returns it (recording the current lr if none is recorded, as `setdefault`);
/// with `set`, records that value (OneCycleLR does).
double initial_lr(torch::optim::OptimizerParamGroup& group,
                  std::optional<double> set = std::nullopt);

/// Another scheduler value PyTorch keeps in the param group dict (OneCycleLR's `max_lr`,
/// `min_lr`, `max_momentum`, `base_momentum`), shared by every scheduler of the group as in
/// Python; nullopt when none is recorded.
std::optional<double> group_field(torch::optim::OptimizerParamGroup& group, const std::string& key);
/// Records `group[key] = value` (see `group_field`).
void set_group_field(torch::optim::OptimizerParamGroup& group, const std::string& key,
                     double value);

/// Base of every steadystep scheduler: a `torch::optim::LRScheduler` that behaves like
/// PyTorch's Python `LRScheduler`. Unlike LibTorch's own schedulers it steps once at
/// construction and counts `last_epoch` as Python does, so the lr after construction and after
/// each `step()` equals PyTorch's. Checkpoint with `torch::save(scheduler, path)` and
/// `torch::load(scheduler, path)` (the scheduler's state; save the optimizer's beside it).
class LRScheduler : public torch::optim::LRScheduler {
 public:
  /// The base lrs are the groups' `initial_lr` (see `initial_lr()`): the current lrs unless
  /// an earlier scheduler on the same groups recorded others. `last_epoch != -1` resumes a
  /// schedule (load a checkpoint to restore its exact state).
  explicit LRScheduler(torch::optim::Optimizer& optimizer, int64_t last_epoch = -1);

  /// Sets `last_epoch` to `epoch` and applies the closed form of the schedule (PyTorch's
  /// deprecated `step(epoch)`); the recursive form where there is no closed form.
  void step(int64_t epoch);
  using torch::optim::LRScheduler::step;

  /// The lrs set by the last step, one per param group.
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  /// The lrs the schedule started from, one per param group.
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  /// The index of the last step taken (0 after construction).
  int64_t last_epoch() const { return last_epoch_; }
  /// The optimizer whose lrs this scheduler sets.
  torch::optim::Optimizer& optimizer() const { return optimizer_; }

  /// Writes the scheduler's state (not the optimizer's) to an archive.
  virtual void save(torch::serialize::OutputArchive& archive) const;
  /// Restores what `save` wrote.
  virtual void load(torch::serialize::InputArchive& archive);

 protected:
  /// The next lrs, from `ctx` (PyTorch's `get_lr`).
  virtual std::vector<double> compute_lr(const schedules::StepContext& ctx) = 0;
  /// The lrs at `ctx.last_epoch` in closed form (PyTorch's `_get_closed_form_lr`); by default
  /// the recursive form.
  virtual std::vector<double> compute_closed_form_lr(const schedules::StepContext& ctx) {
    return compute_lr(ctx);
  }
  /// The schedulers this one drives (SequentialLR, ChainedScheduler, BoundedLR).
  virtual std::vector<std::shared_ptr<LRScheduler>> children() const { return {}; }

  /// The step PyTorch takes at construction. Every concrete scheduler calls it last in its
  /// constructor (a base constructor cannot reach the derived `compute_lr`). Virtual so that a
  /// wrapper (BoundedLR) that SequentialLR restarts passes it on to the scheduler it wraps.
  virtual void initial_step();
  /// PyTorch's `_update_lr(epoch)`: advances `last_epoch` (or sets it to `epoch`, closed form),
  /// computes the lrs and sets them, without counting a step.
  void update_lr(std::optional<int64_t> epoch);
  /// Sets the optimizer's lrs and records them as the last lrs.
  void apply_lrs(std::vector<double> lrs);
  void set_last_epoch(int64_t last_epoch) { last_epoch_ = last_epoch; }
  void set_base_lrs(std::vector<double> base_lrs);
  /// Whether this scheduler's construction registered group `i`'s initial lr (Python's
  /// `setdefault` found none): a constructor that sets the lr first (CyclicLR) re-registers it.
  bool created_initial_lr(size_t i) const { return created_initial_lr_.at(i); }
  /// The context `compute_lr` sees now.
  schedules::StepContext context() const;
  /// Writes/reads a double vector under `key` (for subclasses' own state).
  static void write_doubles(torch::serialize::OutputArchive& archive, const std::string& key,
                            const std::vector<double>& values);
  static std::vector<double> read_doubles(torch::serialize::InputArchive& archive,
                                          const std::string& key);

 private:
  friend class SequentialLR;
  friend class BoundedLR;
  std::vector<double> get_lrs() final;

  torch::optim::Optimizer& optimizer_;
  int64_t last_epoch_;
  int64_t step_count_py_ = 0;  // Python's _step_count
  bool is_initial_ = false;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
  std::vector<bool> created_initial_lr_;
};

/// `torch::save(scheduler, path)` support.
torch::serialize::OutputArchive& operator<<(torch::serialize::OutputArchive& archive,
                                            const LRScheduler& scheduler);
/// `torch::load(scheduler, path)` support.
torch::serialize::InputArchive& operator>>(torch::serialize::InputArchive& archive,
                                           LRScheduler& scheduler);

/// A scheduler whose lrs come from a schedule-math object (`get_lr`, `closed_form_lr`), the
/// same object the Python class of the same name uses. Concrete schedulers only construct it.
template <typename Schedule>
class ScheduleLR : public LRScheduler {
 public:
  const Schedule& schedule() const { return schedule_; }

 protected:
  ScheduleLR(torch::optim::Optimizer& optimizer, int64_t last_epoch, Schedule schedule)
      : LRScheduler(optimizer, last_epoch), schedule_(std::move(schedule)) {
    initial_step();
  }
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override {
    return schedule_.get_lr(ctx);
  }
  std::vector<double> compute_closed_form_lr(const schedules::StepContext& ctx) override {
    return schedule_.closed_form_lr(ctx);
  }

 private:
  Schedule schedule_;
};

/// PyTorch's `LambdaLR(optimizer, lr_lambda, last_epoch=-1)`: lr = base_lr * lr_lambda(t);
/// one function for all param groups or one per group.
class LambdaLR : public ScheduleLR<schedules::Lambda> {
 public:
  LambdaLR(torch::optim::Optimizer& optimizer, std::vector<schedules::LrLambda> lr_lambda,
           int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::Lambda(std::move(lr_lambda), optimizer.param_groups().size())) {}
  LambdaLR(torch::optim::Optimizer& optimizer, schedules::LrLambda lr_lambda,
           int64_t last_epoch = -1)
      : LambdaLR(optimizer, std::vector<schedules::LrLambda>{std::move(lr_lambda)}, last_epoch) {}
};

/// PyTorch's `MultiplicativeLR(optimizer, lr_lambda, last_epoch=-1)`: lr *= lr_lambda(t) each
/// step.
class MultiplicativeLR : public ScheduleLR<schedules::Multiplicative> {
 public:
  MultiplicativeLR(torch::optim::Optimizer& optimizer, std::vector<schedules::LrLambda> lr_lambda,
                   int64_t last_epoch = -1)
      : ScheduleLR(
            optimizer, last_epoch,
            schedules::Multiplicative(std::move(lr_lambda), optimizer.param_groups().size())) {}
  MultiplicativeLR(torch::optim::Optimizer& optimizer, schedules::LrLambda lr_lambda,
                   int64_t last_epoch = -1)
      : MultiplicativeLR(optimizer, std::vector<schedules::LrLambda>{std::move(lr_lambda)},
                         last_epoch) {}
};

/// PyTorch's `StepLR(optimizer, step_size, gamma=0.1, last_epoch=-1)`: lr *= gamma every
/// `step_size` steps. Unlike `torch::optim::StepLR`, it decays on the same step as Python's.
class StepLR : public ScheduleLR<schedules::Step> {
 public:
  StepLR(torch::optim::Optimizer& optimizer, int64_t step_size, double gamma = 0.1,
         int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch, schedules::Step(step_size, gamma)) {}
};

/// PyTorch's `MultiStepLR(optimizer, milestones, gamma=0.1, last_epoch=-1)`: lr *= gamma at
/// each milestone step.
class MultiStepLR : public ScheduleLR<schedules::MultiStep> {
 public:
  MultiStepLR(torch::optim::Optimizer& optimizer, std::vector<int64_t> milestones,
              double gamma = 0.1, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::MultiStep(std::vector<double>(milestones.begin(), milestones.end()),
                                        gamma)) {}
};

/// PyTorch's `ConstantLR(optimizer, factor=1/3, total_iters=5, last_epoch=-1)`.
class ConstantLR : public ScheduleLR<schedules::Constant> {
 public:
  ConstantLR(torch::optim::Optimizer& optimizer, double factor = 1.0 / 3, int64_t total_iters = 5,
             int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch, schedules::Constant(factor, total_iters)) {}
};

/// PyTorch's `LinearLR(optimizer, start_factor=1/3, end_factor=1.0, total_iters=5,
/// last_epoch=-1)`.
class LinearLR : public ScheduleLR<schedules::Linear> {
 public:
  LinearLR(torch::optim::Optimizer& optimizer, double start_factor = 1.0 / 3,
           double end_factor = 1.0, int64_t total_iters = 5, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::Linear(start_factor, end_factor, total_iters)) {}
};

/// PyTorch's `ExponentialLR(optimizer, gamma, last_epoch=-1)`: lr *= gamma every step.
class ExponentialLR : public ScheduleLR<schedules::Exponential> {
 public:
  ExponentialLR(torch::optim::Optimizer& optimizer, double gamma, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch, schedules::Exponential(gamma)) {}
};

/// PyTorch's `PolynomialLR(optimizer, total_iters=5, power=1.0, last_epoch=-1)`.
class PolynomialLR : public ScheduleLR<schedules::Polynomial> {
 public:
  PolynomialLR(torch::optim::Optimizer& optimizer, int64_t total_iters = 5, double power = 1.0,
               int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch, schedules::Polynomial(total_iters, power)) {}
};

/// PyTorch's `CosineAnnealingLR(optimizer, T_max, eta_min=0.0, last_epoch=-1)`: anneals each
/// lr from its base value to `eta_min` along a half cosine of `T_max` steps (then back up, as
/// PyTorch does). The lr sequence equals PyTorch's to the last bit.
class CosineAnnealingLR : public ScheduleLR<schedules::CosineAnnealing> {
 public:
  CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t T_max, double eta_min = 0.0,
                    int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::CosineAnnealing(static_cast<double>(T_max), eta_min)),
        T_max_(T_max) {}

  int64_t T_max() const { return T_max_; }
  double eta_min() const { return schedule().eta_min(); }

 private:
  int64_t T_max_;
};

/// PyTorch's `CosineAnnealingWarmRestarts(optimizer, T_0, T_mult=1, eta_min=0.0,
/// last_epoch=-1)` (SGDR). `step(epoch)` takes fractional epochs, as PyTorch's does.
class CosineAnnealingWarmRestarts : public LRScheduler {
 public:
  CosineAnnealingWarmRestarts(torch::optim::Optimizer& optimizer, int64_t T_0, int64_t T_mult = 1,
                              double eta_min = 0.0, int64_t last_epoch = -1);
  /// Moves to `epoch` (fractional allowed: `epoch + i / iters` within an epoch).
  void step(double epoch);
  using torch::optim::LRScheduler::step;
  const schedules::WarmRestartsState& state() const { return state_; }
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;
  /// PyTorch's `_update_lr(epoch)` (SequentialLR's restart): PyTorch's class has no closed form,
  /// so it sets `last_epoch` and recomputes the lrs at the current position of the cycle.
  std::vector<double> compute_closed_form_lr(const schedules::StepContext& ctx) override;

 private:
  schedules::CosineWarmRestarts schedule_;
  schedules::WarmRestartsState state_;
};

/// Options of `CyclicLR`, PyTorch's arguments and defaults. One value in a per-group vector
/// (base_lr, max_lr, base_momentum, max_momentum) stands for every group.
struct CyclicLROptions {
  CyclicLROptions(std::vector<double> base_lr, std::vector<double> max_lr)
      : base_lr_(std::move(base_lr)), max_lr_(std::move(max_lr)) {}
  TORCH_ARG(std::vector<double>, base_lr);
  TORCH_ARG(std::vector<double>, max_lr);
  TORCH_ARG(double, step_size_up) = 2000;
  TORCH_ARG(std::optional<double>, step_size_down) = std::nullopt;
  TORCH_ARG(std::string, mode) = "triangular";
  TORCH_ARG(double, gamma) = 1.0;
  TORCH_ARG(schedules::ScaleFn, scale_fn) = nullptr;
  TORCH_ARG(std::string, scale_mode) = "cycle";
  TORCH_ARG(bool, cycle_momentum) = true;
  TORCH_ARG(std::vector<double>, base_momentum) = {0.8};
  TORCH_ARG(std::vector<double>, max_momentum) = {0.9};
  TORCH_ARG(int64_t, last_epoch) = -1;
};

/// PyTorch's `CyclicLR`: lr cycles between base_lr and max_lr (triangular, triangular2,
/// exp_range or a custom scale_fn); with `cycle_momentum`, momentum (or Adam's beta1) cycles
/// in antiphase on SGD, Adam, AdamW, RMSprop and steadystep's optimizers.
class CyclicLR : public LRScheduler {
 public:
  CyclicLR(torch::optim::Optimizer& optimizer, const CyclicLROptions& options);

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;

 private:
  schedules::Cyclic schedule_;
  bool cycle_momentum_;
};

/// Options of `OneCycleLR`, PyTorch's arguments and defaults. Give `total_steps`, or `epochs`
/// and `steps_per_epoch`.
struct OneCycleLROptions {
  explicit OneCycleLROptions(std::vector<double> max_lr) : max_lr_(std::move(max_lr)) {}
  TORCH_ARG(std::vector<double>, max_lr);
  TORCH_ARG(std::optional<int64_t>, total_steps) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, epochs) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, steps_per_epoch) = std::nullopt;
  TORCH_ARG(double, pct_start) = 0.3;
  TORCH_ARG(std::string, anneal_strategy) = "cos";
  TORCH_ARG(bool, cycle_momentum) = true;
  TORCH_ARG(std::vector<double>, base_momentum) = {0.85};
  TORCH_ARG(std::vector<double>, max_momentum) = {0.95};
  TORCH_ARG(double, div_factor) = 25.0;
  TORCH_ARG(double, final_div_factor) = 1e4;
  TORCH_ARG(bool, three_phase) = false;
  TORCH_ARG(int64_t, last_epoch) = -1;
};

/// PyTorch's `OneCycleLR`: warmup to max_lr then annealing far below the start (two or three
/// phases, cos or linear), momentum/beta1 in antiphase. Stepping past total_steps is an error.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(torch::optim::Optimizer& optimizer, const OneCycleLROptions& options);
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;

 private:
  schedules::OneCycle schedule_;
  std::vector<schedules::OneCycleGroup> groups_;
  bool cycle_momentum_;
};

/// Options of `ReduceLROnPlateau`, PyTorch's arguments and defaults.
struct ReduceLROnPlateauOptions {
  TORCH_ARG(std::string, mode) = "min";
  TORCH_ARG(double, factor) = 0.1;
  TORCH_ARG(int64_t, patience) = 10;
  TORCH_ARG(double, threshold) = 1e-4;
  TORCH_ARG(std::string, threshold_mode) = "rel";
  TORCH_ARG(int64_t, cooldown) = 0;
  TORCH_ARG(std::vector<double>, min_lr) = {0.0};
  TORCH_ARG(double, eps) = 1e-8;
};

/// PyTorch's `ReduceLROnPlateau`, as an LRScheduler: call `step(metric)` after each
/// evaluation. (A plain `step()` has no metric and is an error.)
class ReduceLROnPlateau : public LRScheduler {
 public:
  explicit ReduceLROnPlateau(torch::optim::Optimizer& optimizer,
                             const ReduceLROnPlateauOptions& options = {});
  /// One evaluation's metric (lower is better in "min" mode).
  void step(double metric);
  /// The deprecated form that also sets `last_epoch`.
  void step(double metric, int64_t epoch);
  const schedules::PlateauState& state() const { return state_; }
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;

 private:
  void step_to(double metric, std::optional<int64_t> epoch);
  ReduceLROnPlateauOptions options_;
  schedules::Plateau schedule_;
  schedules::PlateauState state_;
};

/// PyTorch's `swa_utils.SWALR(optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos",
/// last_epoch=-1)`: anneals each lr to its swa_lr (one value for all groups, or one each).
class SWALR : public ScheduleLR<schedules::SWA> {
 public:
  SWALR(torch::optim::Optimizer& optimizer, std::vector<double> swa_lr, int64_t anneal_epochs = 10,
        const std::string& anneal_strategy = "cos", int64_t last_epoch = -1);
  SWALR(torch::optim::Optimizer& optimizer, double swa_lr, int64_t anneal_epochs = 10,
        const std::string& anneal_strategy = "cos", int64_t last_epoch = -1)
      : SWALR(optimizer, std::vector<double>{swa_lr}, anneal_epochs, anneal_strategy, last_epoch) {}
};

/// PyTorch's `SequentialLR(optimizer, schedulers, milestones, last_epoch=-1)`: runs
/// `schedulers[i]` from `milestones[i-1]` on (each restarted at its milestone).
class SequentialLR : public LRScheduler {
 public:
  SequentialLR(torch::optim::Optimizer& optimizer,
               std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones, int64_t last_epoch = -1);

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;
  std::vector<std::shared_ptr<LRScheduler>> children() const override { return schedulers_; }

 private:
  void undo_step(LRScheduler& scheduler);
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

/// PyTorch's `ChainedScheduler(schedulers, optimizer=None)`: every `step()` steps all
/// `schedulers` in order, so their effects compose.
class ChainedScheduler : public LRScheduler {
 public:
  explicit ChainedScheduler(std::vector<std::shared_ptr<LRScheduler>> schedulers,
                            torch::optim::Optimizer* optimizer = nullptr);

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;
  std::vector<std::shared_ptr<LRScheduler>> children() const override { return schedulers_; }

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
};

/// Steps any `scheduler` and keeps every lr inside [min_lr, max_lr]: the clamped exponential
/// decay of the classic texts is `BoundedLR(make_shared<ExponentialLR>(opt, gamma), lo, hi)`.
class BoundedLR : public LRScheduler {
 public:
  BoundedLR(std::shared_ptr<LRScheduler> scheduler, double min_lr, double max_lr);

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;
  /// A restart by SequentialLR (`update_lr(0)`) restarts the wrapped scheduler, then clamps.
  std::vector<double> compute_closed_form_lr(const schedules::StepContext& ctx) override;
  /// SequentialLR's construction step, passed on to the wrapped scheduler, then clamped.
  void initial_step() override;
  std::vector<std::shared_ptr<LRScheduler>> children() const override { return {scheduler_}; }

 private:
  std::shared_ptr<LRScheduler> scheduler_;
  double min_lr_, max_lr_;
};

/// `WarmupCosineLR(optimizer, warmup_steps, total_steps, warmup_start_factor=0.0,
/// eta_min=0.0)`: linear warmup from `warmup_start_factor * base` to base, then a half cosine
/// to eta_min at total_steps, then eta_min. With the defaults it equals transformers'
/// get_cosine_schedule_with_warmup up to total_steps.
class WarmupCosineLR : public ScheduleLR<schedules::WarmupCosine> {
 public:
  WarmupCosineLR(torch::optim::Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                 double warmup_start_factor = 0.0, double eta_min = 0.0, int64_t last_epoch = -1)
      : ScheduleLR(
            optimizer, last_epoch,
            schedules::WarmupCosine(warmup_steps, total_steps, warmup_start_factor, eta_min)) {}
};

/// `WarmupStableDecayLR(optimizer, warmup_steps, stable_steps, decay_steps,
/// warmup_start_factor=0.0, min_lr_ratio=0.0, decay_type="cosine")`: the WSD schedule of LLM
/// pre-training; decay_type in {linear, cosine, 1-sqrt}.
class WarmupStableDecayLR : public ScheduleLR<schedules::WarmupStableDecay> {
 public:
  WarmupStableDecayLR(torch::optim::Optimizer& optimizer, int64_t warmup_steps,
                      int64_t stable_steps, int64_t decay_steps, double warmup_start_factor = 0.0,
                      double min_lr_ratio = 0.0, const std::string& decay_type = "cosine",
                      int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::WarmupStableDecay(warmup_steps, stable_steps, decay_steps,
                                                warmup_start_factor, min_lr_ratio, decay_type)) {}
};

/// `InverseSqrtLR(optimizer, warmup_steps, timescale=None)`: linear warmup, then
/// base / sqrt((t + timescale - warmup_steps) / timescale).
class InverseSqrtLR : public ScheduleLR<schedules::InverseSqrt> {
 public:
  InverseSqrtLR(torch::optim::Optimizer& optimizer, int64_t warmup_steps,
                std::optional<int64_t> timescale = std::nullopt, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch, schedules::InverseSqrt(warmup_steps, timescale)) {}
};

/// `ExponentialDecayLR(optimizer, decay_rate, decay_steps, staircase=false, min_lr=0.0)`:
/// max(base * decay_rate ** (t / decay_steps), min_lr), the exponent floored when staircase.
class ExponentialDecayLR : public ScheduleLR<schedules::ExponentialDecay> {
 public:
  ExponentialDecayLR(torch::optim::Optimizer& optimizer, double decay_rate, int64_t decay_steps,
                     bool staircase = false, double min_lr = 0.0, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::ExponentialDecay(decay_rate, decay_steps, staircase, min_lr)) {}
};

/// `RandomLR(optimizer, min_lr, max_lr, period=1, log_uniform=true, seed=0)`: a new random lr
/// every `period` steps, the same sequence for the same seed in C++ and Python.
class RandomLR : public ScheduleLR<schedules::Random> {
 public:
  RandomLR(torch::optim::Optimizer& optimizer, double min_lr, double max_lr, int64_t period = 1,
           bool log_uniform = true, uint64_t seed = 0, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::Random(min_lr, max_lr, period, log_uniform, seed)) {}
};

}  // namespace steadystep
