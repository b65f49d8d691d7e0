#pragma once

#include <steadystep/schedules/cosine_annealing.h>
#include <steadystep/schedules/schedule.h>

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

/// PyTorch's `CosineAnnealingLR(optimizer, T_max, eta_min=0.0, last_epoch=-1)`: anneals each
/// lr from its base value to `eta_min` along a half cosine of `T_max` steps (then back up, as
/// PyTorch does). The lr sequence equals PyTorch's to the last bit.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t T_max, double eta_min = 0.0,
                    int64_t last_epoch = -1);

  int64_t T_max() const { return T_max_; }
  double eta_min() const { return schedule_.eta_min(); }

 protected:
  std::vector<double> compute_lr(const schedules::StepContext& ctx) override;
  std::vector<double> compute_closed_form_lr(const schedules::StepContext& ctx) override;

 private:
  int64_t T_max_;
  schedules::CosineAnnealing schedule_;
};

}  // namespace steadystep
