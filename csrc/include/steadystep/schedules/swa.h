#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <string>
#include <vector>

namespace steadystep::schedules {

/// PyTorch's `swa_utils.SWALR` math: anneals each lr to its `swa_lr` over `anneal_epochs`
/// steps ("cos" or "linear"), then holds it.
class SWA {
 public:
  SWA(std::vector<double> swa_lrs, int64_t anneal_epochs, const std::string& anneal_strategy);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const { return get_lr(ctx); }

 private:
  double anneal(double t) const;
  std::vector<double> swa_lrs_;
  int64_t anneal_epochs_;
  bool cosine_;
};

}  // namespace steadystep::schedules
