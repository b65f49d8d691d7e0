#pragma once

// Hyper-parameters of the fused steps, in plain types: the CPU kernels, the CUDA launchers
// and the op registrations share them. Torch-free on purpose (nvcc includes it).

namespace steadystep {

/// One Adam/AdamW param group's settings (torch.optim.Adam's names).
struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, maximize, decoupled_weight_decay;
};

/// One SGD param group's settings (torch.optim.SGD's names).
struct SGDHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
};

}  // namespace steadystep
