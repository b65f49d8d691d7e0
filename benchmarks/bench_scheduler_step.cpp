// Cost of one scheduler step() in C++ (LibTorch frontend), per number of param groups.
// benchmarks/bench_schedulers.py runs this and prints it beside torch's Python step().

#include <steadystep/lr_scheduler.h>

#include <benchmark/benchmark.h>
#include <torch/optim/sgd.h>

#include <memory>
#include <vector>

namespace {

std::unique_ptr<torch::optim::SGD> make_sgd(int64_t groups) {
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  for (int64_t g = 0; g < groups; ++g) {
    param_groups.emplace_back(
        std::vector<torch::Tensor>{torch::zeros({1})},
        std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(0.1).momentum(0.9)));
  }
  return std::make_unique<torch::optim::SGD>(param_groups,
                                             torch::optim::SGDOptions(0.1).momentum(0.9));
}

template <typename Make>
void run(benchmark::State& state, Make make) {
  const int64_t groups = state.range(0);
  auto opt = make_sgd(groups);
  auto sched = make(*opt);
  for (auto _ : state) {
    sched->step();
    benchmark::DoNotOptimize(opt->param_groups()[0].options().get_lr());
  }
  state.counters["groups"] = static_cast<double>(groups);
  state.counters["ns_per_group"] = benchmark::Counter(
      static_cast<double>(groups),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

using steadystep::LRScheduler;
using Opt = torch::optim::Optimizer;

void BM_CosineAnnealingLR(benchmark::State& s) {
  run(s, [](Opt& o) { return std::make_unique<steadystep::CosineAnnealingLR>(o, 1000); });
}
void BM_StepLR(benchmark::State& s) {
  run(s, [](Opt& o) { return std::make_unique<steadystep::StepLR>(o, 30); });
}
void BM_OneCycleLR(benchmark::State& s) {
  // total_steps beyond any iteration count the benchmark can reach
  run(s, [](Opt& o) {
    return std::make_unique<steadystep::OneCycleLR>(
        o, steadystep::OneCycleLROptions({0.1}).total_steps(int64_t{1} << 40));
  });
}
void BM_CyclicLR(benchmark::State& s) {
  run(s, [](Opt& o) {
    return std::make_unique<steadystep::CyclicLR>(o, steadystep::CyclicLROptions({0.01}, {0.1}));
  });
}
void BM_WarmupCosineLR(benchmark::State& s) {
  run(s, [](Opt& o) {
    return std::make_unique<steadystep::WarmupCosineLR>(o, 1000, int64_t{1} << 40);
  });
}

BENCHMARK(BM_CosineAnnealingLR)->Arg(1)->Arg(8);
BENCHMARK(BM_StepLR)->Arg(1)->Arg(8);
BENCHMARK(BM_OneCycleLR)->Arg(1)->Arg(8);
BENCHMARK(BM_CyclicLR)->Arg(1)->Arg(8);
BENCHMARK(BM_WarmupCosineLR)->Arg(1)->Arg(8);

}  // namespace

BENCHMARK_MAIN();
