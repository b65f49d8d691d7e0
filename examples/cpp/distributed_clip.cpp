// Global-norm clipping and a fused AdamW step over a c10d process group, from LibTorch: each
// rank holds a shard of the parameters (ZeRO-style, or one pipeline stage), and the norm, the
// clip coefficient and the non-finite guard are those of the whole model, the same on every
// rank, without a host sync.
//
//   distributed_clip                                   2 ranks as 2 threads of this process
//   distributed_clip --rank 0 --world-size 2 --store /tmp/ss_store &   one process per rank,
//   distributed_clip --rank 1 --world-size 2 --store /tmp/ss_store     meeting at a FileStore
//
// (Delete the store file before a new multi-process run.) Gloo on CPU; with CUDA tensors build
// the group with c10d::ProcessGroupNCCL the same way. Build: examples/cpp/CMakeLists.txt
// (steadystep_use_gloo: pip's torch ships no gloo headers, see gloo_compat.cmake).

#include <steadystep/steadystep.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

std::mutex print_lock;

// A gloo process group of `size` ranks meeting at `store` (what
// torch.distributed.init_process_group("gloo") builds in Python).
c10::intrusive_ptr<c10d::ProcessGroup> gloo_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size) {
  auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(30));
  options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
  group->setBackend(c10::kCPU, c10d::ProcessGroup::BackendType::GLOO, backend);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  return group;
}

void train(int rank, const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  // This rank's shard: its own part of the parameters, and a toy loss over it.
  torch::manual_seed(rank);
  std::vector<torch::Tensor> shard = {torch::randn({64, 32}, torch::requires_grad()),
                                      torch::randn({64}, torch::requires_grad())};
  const torch::Tensor x = torch::randn({128, 32});
  auto loss_of = [&] { return (torch::matmul(x, shard[0].t()) + shard[1]).pow(2).mean(); };

  // 1. Clipping on its own: every rank scales its gradients by the coefficient of the global
  //    norm (every rank of the group must call it).
  loss_of().backward();
  const torch::Tensor norm = steadystep::clip_grad_norm_(shard, /*max_norm=*/1.0,
                                                         /*norm_type=*/2.0, group);

  // 2. Clipping fused into AdamW: the optimizer takes the global norm at every step.
  steadystep::FusedAdam opt(shard, steadystep::FusedAdamOptions(1e-2)
                                       .decoupled_weight_decay(true)
                                       .max_grad_norm(1.0)
                                       .process_group(group));
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    const torch::Tensor loss = loss_of();
    loss.backward();
    opt.step();
    // Reading the values syncs; training itself never does.
    std::lock_guard<std::mutex> lock(print_lock);
    std::cout << "rank " << rank << " step " << step << " local loss " << loss.item<double>()
              << " global grad norm " << opt.last_grad_norm().item<double>() << "\n";
  }
  std::lock_guard<std::mutex> lock(print_lock);
  std::cout << "rank " << rank << ": first clip_grad_norm_ saw global norm " << norm.item<double>()
            << ", skipped steps " << opt.skipped_steps().item<int64_t>() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  int rank = -1, world_size = 2;
  std::string store_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--rank") {
      rank = std::stoi(argv[i + 1]);
    } else if (flag == "--world-size") {
      world_size = std::stoi(argv[i + 1]);
    } else if (flag == "--store") {
      store_path = argv[i + 1];
    } else {
      std::cerr << "usage: " << argv[0] << " [--rank R --world-size N --store PATH]\n";
      return 2;
    }
  }
  if (rank >= 0) {  // one rank of a multi-process run
    auto store = c10::make_intrusive<c10d::FileStore>(store_path, world_size);
    train(rank, gloo_group(store, rank, world_size));
    return 0;
  }
  // All ranks in this process: each thread gets its own registry of group names, as each
  // process has one (the collectives find a group by its name); and torch's flight recorder of
  // collectives, which two ranks in one process race on, is off.
  setenv("TORCH_FR_BUFFER_SIZE", "0", /*overwrite=*/1);
  c10d::set_thread_isolation_mode(true);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> ranks;
  std::atomic<bool> failed{false};
  for (int r = 0; r < world_size; ++r) {
    ranks.emplace_back([&, r] {
      try {
        train(r, gloo_group(store, r, world_size));
      } catch (const std::exception& e) {  // e.g. another rank failed: a collective times out
        std::lock_guard<std::mutex> lock(print_lock);
        std::cerr << "rank " << r << ": " << e.what() << "\n";
        failed = true;
      }
    });
  }
  for (auto& t : ranks) {
    t.join();
  }
  return failed ? 1 : 0;
}
