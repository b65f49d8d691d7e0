// A tiny LibTorch training loop with steadystep's CosineAnnealingLR: fits a two-layer MLP to
// a synthetic regression target and prints loss, learning rate and gradient norm per epoch.

#include <steadystep/steadystep.h>
#include <torch/torch.h>

#include <cstdio>

int main() {
  torch::manual_seed(0);
  const int64_t samples = 512, features = 16, epochs = 20, batch = 64;
  const auto x = torch::randn({samples, features});
  const auto y = torch::sin(x.sum(1, /*keepdim=*/true));

  torch::nn::Sequential model(torch::nn::Linear(features, 64), torch::nn::Tanh(),
                              torch::nn::Linear(64, 1));
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  steadystep::CosineAnnealingLR sched(opt, /*T_max=*/epochs, /*eta_min=*/1e-3);

  std::printf("steadystep %s: MLP on %lld samples, cosine lr over %lld epochs\n",
              STEADYSTEP_VERSION, static_cast<long long>(samples), static_cast<long long>(epochs));
  std::printf("%5s  %10s  %10s  %10s\n", "epoch", "loss", "lr", "grad norm");
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    double loss_sum = 0.0;
    torch::Tensor grad_norm;
    for (int64_t start = 0; start < samples; start += batch) {
      const auto xb = x.narrow(0, start, batch);
      const auto yb = y.narrow(0, start, batch);
      opt.zero_grad();
      auto loss = torch::mse_loss(model->forward(xb), yb);
      loss.backward();
      std::vector<torch::Tensor> grads;
      for (const auto& p : model->parameters()) {
        grads.push_back(p.grad());
      }
      grad_norm = steadystep::get_total_norm(grads);  // a 0-dim tensor: no sync here
      opt.step();
      loss_sum += loss.item<double>();
    }
    std::printf("%5lld  %10.6f  %10.6f  %10.6f\n", static_cast<long long>(epoch),
                loss_sum / (samples / batch), sched.get_last_lr()[0], grad_norm.item<double>());
    sched.step();
  }
  return 0;
}
