// Built against the installed steadystep: a scheduler drives torch::optim::SGD.
#include <steadystep/steadystep.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

int main() {
  auto w = torch::zeros({3}, torch::requires_grad());
  torch::optim::SGD opt({w}, torch::optim::SGDOptions(0.1));
  steadystep::CosineAnnealingLR sched(opt, /*T_max=*/10, /*eta_min=*/0.0);
  for (int i = 0; i < 10; ++i) {
    sched.step();
  }
  const double lr = sched.get_last_lr()[0];
  const auto norm = steadystep::get_total_norm({torch::ones({4})});
  std::cout << "steadystep " << STEADYSTEP_VERSION << ": lr after T_max steps = " << lr
            << ", norm = " << norm.item<double>() << "\n";
  // At T_max the cosine reaches eta_min; ||(1,1,1,1)|| = 2.
  const bool ok = std::abs(lr) < 1e-12 && std::abs(norm.item<double>() - 2.0) < 1e-6;
  return ok ? 0 : 1;
}
