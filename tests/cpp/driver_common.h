#pragma once

// What the pybind test drivers (guard_driver.cpp, precision_driver.cpp) share: tensors that
// cross to Python as flat lists of doubles (fp32, fp16 and bf16 values are exact in double), and
// a resume from a checkpoint as a training script does it.

#include <torch/serialize.h>
#include <torch/torch.h>

#include <memory>
#include <sstream>
#include <vector>

namespace steadystep::test {

using Flat = std::vector<double>;

inline torch::Tensor from_flat(const Flat& values, const std::vector<int64_t>& shape,
                               torch::ScalarType dtype = torch::kFloat) {
  return torch::tensor(values, torch::kDouble).to(dtype).reshape(shape);
}

inline Flat to_flat(const torch::Tensor& t) {
  const torch::Tensor d = t.detach().to(torch::kDouble).contiguous().reshape({-1});
  return Flat(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

/// The optimizer and the params through torch::save / torch::load: the params come back as
/// fresh leaves, `make(params)` builds a new optimizer over them, and the optimizer's archive is
/// loaded into it. Whatever `make` sets up anew (policies, the torch seed) only the archive can
/// restore.
template <typename Optimizer, typename Make>
void resume_from_checkpoint(std::unique_ptr<Optimizer>& opt, std::vector<torch::Tensor>& params,
                            Make make) {
  std::stringstream opt_stream;
  torch::save(*opt, opt_stream);
  std::stringstream param_stream;
  torch::save(params, param_stream);
  std::vector<torch::Tensor> loaded;
  torch::load(loaded, param_stream);
  params.clear();
  for (auto& p : loaded) {
    params.push_back(p.detach().clone().requires_grad_());
  }
  opt = make(params);
  torch::load(*opt, opt_stream);
}

}  // namespace steadystep::test
