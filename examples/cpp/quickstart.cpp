#include <steadystep/steadystep.h>
#include <torch/torch.h>

int main() {
  torch::manual_seed(0);
  torch::nn::Linear model(16, 1);
  auto x = torch::randn({256, 16}), y = x.sum(1, /*keepdim=*/true);

  steadystep::FusedAdam opt(model->parameters(), steadystep::FusedAdamOptions(1e-2)
                                                     .decoupled_weight_decay(true)  // AdamW
                                                     .weight_decay(0.01)
                                                     .max_grad_norm(1.0));  // clip, fused in
  steadystep::WarmupCosineLR sched(opt, /*warmup_steps=*/20, /*total_steps=*/200);
  for (int step = 0; step < 200; ++step) {
    opt.zero_grad();
    torch::mse_loss(model->forward(x), y).backward();
    opt.step();    // norm + guard + update in two passes, no host sync
    sched.step();  // the lr PyTorch's scheduler would set
  }
  // The norm stays a 0-dim tensor on the device until you read it.
  std::cout << "grad norm " << opt.last_grad_norm().item<double>() << ", lr "
            << sched.get_last_lr()[0] << "\n";
  torch::save(opt, "quickstart_opt.pt");
  torch::save(sched, "quickstart_sched.pt");
}
