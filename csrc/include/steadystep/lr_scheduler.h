#pragma once

#include <steadystep/schedules/cosine_annealing.h>
#include <steadystep/schedules/lambda.h>
#include <steadystep/schedules/schedule.h>
#include <steadystep/schedules/step.h>
#include <steadystep/schedules/warmup.h>

#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <vector>

namespace steadystep {

/// Base of every steadystep scheduler: a `torch::optim::LRScheduler` that behaves like
/// PyTorch's Python `LRScheduler`. Unlike LibTorch's own schedulers it steps once at
/// construction and counts `last_epoch` as Python does, so the lr after construction and after
/// each `step()` equals PyTorch's. Checkpoint with `torch::save(scheduler, path)` and
/// `torch::load(scheduler, path)`.
class LRScheduler : public torch::optim::LRScheduler {
 public:
  /// `last_epoch == -1` starts a schedule from the optimizer's current lrs. Any other value
  /// resumes one: LibTorch's param groups carry no `initial_lr`, so the current lrs are taken
  /// as the base lrs (load a checkpoint to restore the exact state).
  explicit LRScheduler(torch::optim::Optimizer& optimizer, int64_t last_epoch = -1);

  /// Sets `last_epoch` to `epoch` and applies the closed form of the schedule (PyTorch's
  /// deprecated `step(epoch)`); falls back to the recursive form where there is none.
  void step(int64_t epoch);
  using torch::optim::LRScheduler::step;

  /// The lrs set by the last step, one per param group.
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  /// The lrs the schedule started from, one per param group.
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  /// The index of the last step taken (0 after construction).
  int64_t last_epoch() const { return last_epoch_; }

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
  /// The step PyTorch takes at construction. Every concrete scheduler calls it last in its
  /// constructor (a base constructor cannot reach the derived `compute_lr`).
  void initial_step();

  torch::optim::Optimizer& optimizer() const { return optimizer_; }

 private:
  std::vector<double> get_lrs() final;
  schedules::StepContext context() const;
  void set_lrs(const std::vector<double>& lrs);

  torch::optim::Optimizer& optimizer_;
  int64_t last_epoch_;
  bool is_initial_ = false;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
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
  MultiplicativeLR(torch::optim::Optimizer& optimizer,
                   std::vector<schedules::LrLambda> lr_lambda, int64_t last_epoch = -1)
      : ScheduleLR(optimizer, last_epoch,
                   schedules::Multiplicative(std::move(lr_lambda),
                                             optimizer.param_groups().size())) {}
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
      : ScheduleLR(optimizer, last_epoch, schedules::MultiStep(std::move(milestones), gamma)) {}
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

}  // namespace steadystep
