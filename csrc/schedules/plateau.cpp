#include <steadystep/schedules/plateau.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

namespace steadystep::schedules {

Plateau::Plateau(const std::string& mode, double factor, int64_t patience, double threshold,
                 const std::string& threshold_mode, int64_t cooldown, std::vector<double> min_lrs,
                 double eps)
    : factor_(factor),
      threshold_(threshold),
      eps_(eps),
      patience_(patience),
      cooldown_(cooldown),
      min_lrs_(std::move(min_lrs)) {
  TORCH_CHECK_VALUE(factor < 1.0, "ReduceLROnPlateau: factor should be < 1.0, got ", factor);
  TORCH_CHECK_VALUE(mode == "min" || mode == "max", "ReduceLROnPlateau: mode ", mode,
                    " is unknown!");
  TORCH_CHECK_VALUE(threshold_mode == "rel" || threshold_mode == "abs",
                    "ReduceLROnPlateau: threshold mode ", threshold_mode, " is unknown!");
  maximize_ = mode == "max";
  relative_ = threshold_mode == "rel";
}

PlateauState Plateau::initial_state() const {
  PlateauState s;
  s.best = maximize_ ? -std::numeric_limits<double>::infinity()
                     : std::numeric_limits<double>::infinity();
  return s;
}

bool Plateau::is_better(double a, double best) const {
  if (!maximize_ && relative_) {
    return a < best * (1.0 - threshold_);
  }
  if (!maximize_) {
    return a < best - threshold_;
  }
  if (relative_) {
    return a > best * (threshold_ + 1.0);
  }
  return a > best + threshold_;
}

bool Plateau::observe(PlateauState& s, double metric, std::optional<int64_t> epoch) const {
  s.last_epoch = epoch ? *epoch : s.last_epoch + 1;
  if (is_better(metric, s.best)) {
    s.best = metric;
    s.num_bad_epochs = 0;
  } else {
    s.num_bad_epochs += 1;
  }
  if (s.cooldown_counter > 0) {
    s.cooldown_counter -= 1;
    s.num_bad_epochs = 0;  // bad epochs in cooldown do not count
  }
  return s.num_bad_epochs > patience_;
}

std::vector<double> Plateau::reduce(const std::vector<double>& lrs) const {
  TORCH_CHECK(min_lrs_.size() == lrs.size(), "The number of param groups in the `optimizer` (",
              lrs.size(), ") differs from when `ReduceLROnPlateau` was initialized (",
              min_lrs_.size(),
              "), usually due to a new param group being added to the optimizer. Please modify "
              "the `min_lrs` field to match the length of the `optimizer` param groups.");
  std::vector<double> out = lrs;
  for (size_t i = 0; i < out.size(); ++i) {
    const double new_lr = std::max(lrs[i] * factor_, min_lrs_[i]);
    if (lrs[i] - new_lr > eps_) {
      out[i] = new_lr;
    }
  }
  return out;
}

void Plateau::rest(PlateauState& s) const {
  s.cooldown_counter = cooldown_;
  s.num_bad_epochs = 0;
}

std::vector<double> Plateau::step(PlateauState& s, double metric, std::optional<int64_t> epoch,
                                  const std::vector<double>& lrs) const {
  if (!observe(s, metric, epoch)) {
    return lrs;
  }
  std::vector<double> out = reduce(lrs);
  rest(s);
  return out;
}

}  // namespace steadystep::schedules
