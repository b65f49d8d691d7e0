// The norm, the clip and the fused step over a c10d process group, from C++: gradients sharded
// by hand over 2 ranks give the norm, the clipped gradients and the parameters that one process
// gets from the whole model.
//
// NOTE [Ranks as threads]: each rank is a thread of this process with its own gloo process
// group (torch's c10d::ProcessGroupGloo over loopback TCP), the groups meeting through one
// c10d::HashStore. c10d's thread isolation mode gives every thread its own group registry, as
// every process has its own, so each rank resolves the group names it registers to its own
// group. Collectives time out after kTimeout: a rank that never joins fails the test, it does
// not hang it. Torch's flight recorder (a process-wide log of collectives, on by default) is
// switched off here: it inserts into a map shared by the whole process before taking its lock,
// which two ranks in one process race on (one process per rank, the usual setup, does not).

#include <steadystep/clip_grad.h>
#include <steadystep/optim.h>

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Group = c10::intrusive_ptr<c10d::ProcessGroup>;
using Tensors = std::vector<torch::Tensor>;

constexpr int kWorld = 2;
constexpr std::chrono::milliseconds kTimeout{30000};
const double kInf = std::numeric_limits<double>::infinity();

// A gloo group of `size` ranks meeting at `store`, as torch.distributed builds one for
// init_process_group("gloo"): the gloo backend serves CPU tensors.
Group gloo_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                 std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
  group->setBackend(c10::kCPU, c10d::ProcessGroup::BackendType::GLOO, backend);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  return group;
}

// Runs body(rank, group) on `world` threads, one gloo group each (NOTE [Ranks as threads]), and
// rethrows the first rank's exception once every rank has finished.
void run_ranks(const std::function<void(int, const Group&)>& body, int world = kWorld,
               std::chrono::milliseconds timeout = kTimeout) {
  // Read once, when the first group records a collective (NOTE [Ranks as threads]).
  setenv("TORCH_FR_BUFFER_SIZE", "0", /*overwrite=*/1);
  c10d::set_thread_isolation_mode(true);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        body(rank, gloo_group(store, rank, world, timeout));
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (const auto& e : errors) {
    if (e) {
      std::rethrow_exception(e);
    }
  }
}

// Tensors of a small model, dim 0 >= 2 so that each rank can hold half of every one.
Tensors random_tensors(uint64_t seed, torch::ScalarType dtype = torch::kFloat) {
  torch::manual_seed(seed);
  return {torch::randn({7, 5}).to(dtype), torch::randn({16}).to(dtype),
          torch::randn({3, 4, 2}).to(dtype), torch::randn({9}).to(dtype)};
}

// How the whole model is split over the ranks.
enum class Sharding { kHalfOfEachTensor, kHalfTheTensors, kAllOnRankZero };

Tensors shard(const Tensors& whole, Sharding sharding, int rank) {
  Tensors mine;
  for (size_t i = 0; i < whole.size(); ++i) {
    switch (sharding) {
      case Sharding::kHalfOfEachTensor:
        mine.push_back(whole[i].tensor_split(kWorld, 0)[rank].clone());
        break;
      case Sharding::kHalfTheTensors:
        if (static_cast<int>(i % kWorld) == rank) {
          mine.push_back(whole[i].clone());
        }
        break;
      case Sharding::kAllOnRankZero:
        if (rank == 0) {
          mine.push_back(whole[i].clone());
        }
        break;
    }
  }
  return mine;
}

// The norm of all tensors as one vector, in fp64: the reference the fp32 norms are held to.
torch::Tensor reference_norm(const Tensors& whole, double norm_type) {
  Tensors flat;
  for (const auto& t : whole) {
    flat.push_back(t.to(torch::kDouble).flatten());
  }
  return torch::linalg_vector_norm(torch::cat(flat), norm_type);
}

// Leaf parameters holding `values`, with gradients `grads`.
Tensors params_with_grads(const Tensors& values, const Tensors& grads) {
  Tensors params;
  for (size_t i = 0; i < values.size(); ++i) {
    params.push_back(values[i].clone().requires_grad_());
    params.back().mutable_grad() = grads[i].clone();
  }
  return params;
}

void expect_close(const torch::Tensor& got, const torch::Tensor& want, double rtol,
                  const std::string& what) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  EXPECT_TRUE(torch::allclose(got, want, rtol, rtol * scale))
      << what << ": max diff " << (got - want).abs().max().item<double>() << " at scale " << scale;
}

const char* name(Sharding s) {
  switch (s) {
    case Sharding::kHalfOfEachTensor:
      return "half of each tensor";
    case Sharding::kHalfTheTensors:
      return "half the tensors";
    case Sharding::kAllOnRankZero:
      return "all on rank 0";
  }
  return "?";
}

TEST(DistributedNorm, EqualsTheNormOfTheWholeModel) {
  const Tensors whole = random_tensors(0);
  for (const double p : {2.0, 1.0, kInf, 3.0}) {
    for (const auto sharding :
         {Sharding::kHalfOfEachTensor, Sharding::kHalfTheTensors, Sharding::kAllOnRankZero}) {
      std::vector<torch::Tensor> norms(kWorld);
      run_ranks([&](int rank, const Group& group) {
        norms[rank] = steadystep::get_total_norm(shard(whole, sharding, rank), p, false, group);
      });
      const std::string what = std::string(name(sharding)) + ", p=" + std::to_string(p);
      const torch::Tensor want = reference_norm(whole, p);
      ASSERT_EQ(norms[0].dim(), 0) << what;
      EXPECT_EQ(norms[0].scalar_type(), torch::kFloat) << what;
      // rel 1e-6: fp32 accumulation over ~100 elements, against an fp64 reference.
      EXPECT_NEAR(norms[0].item<double>(), want.item<double>(), 1e-6 * want.item<double>()) << what;
      // One all-reduced value: the same bits on every rank.
      EXPECT_TRUE(torch::equal(norms[0], norms[1])) << what;
      // And what one process computes from the whole model, to fp32 rounding.
      EXPECT_NEAR(norms[0].item<double>(), steadystep::get_total_norm(whole, p).item<double>(),
                  1e-6 * want.item<double>())
          << what;
    }
  }
}

TEST(DistributedNorm, Fp64ShardsGiveAnFp64Norm) {
  const Tensors whole = random_tensors(1, torch::kDouble);
  std::vector<torch::Tensor> norms(kWorld);
  run_ranks([&](int rank, const Group& group) {
    norms[rank] = steadystep::get_total_norm(shard(whole, Sharding::kHalfOfEachTensor, rank), 2.0,
                                             false, group);
  });
  EXPECT_EQ(norms[0].scalar_type(), torch::kDouble);
  EXPECT_NEAR(norms[0].item<double>(), reference_norm(whole, 2.0).item<double>(), 1e-12);
}

TEST(DistributedNorm, NullGroupIsTheLocalNorm) {
  const Tensors whole = random_tensors(2);
  for (const double p : {2.0, 1.0, kInf, 0.0}) {
    EXPECT_TRUE(torch::equal(steadystep::get_total_norm(whole, p, false, Group()),
                             steadystep::get_total_norm(whole, p)))
        << p;
  }
  auto a = params_with_grads(whole, random_tensors(3));
  auto b = params_with_grads(whole, random_tensors(3));
  const auto na = steadystep::clip_grad_norm_(a, 0.5, 2.0, Group());
  const auto nb = steadystep::clip_grad_norm_(b, 0.5, 2.0);
  EXPECT_TRUE(torch::equal(na, nb));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].grad(), b[i].grad())) << i;
  }
}

TEST(DistributedNorm, NonFiniteOnOneRankRaisesOnEveryRankWhenAskedTo) {
  const Tensors whole = random_tensors(4);
  std::vector<std::string> errors(kWorld);
  run_ranks([&](int rank, const Group& group) {
    Tensors mine = shard(whole, Sharding::kHalfOfEachTensor, rank);
    if (rank == 1) {
      mine[2].view(-1)[3] = kInf;
    }
    try {
      steadystep::get_total_norm(mine, 2.0, /*error_if_nonfinite=*/true, group);
    } catch (const c10::Error& e) {
      errors[rank] = e.what_without_backtrace();
    }
  });
  for (int rank = 0; rank < kWorld; ++rank) {
    EXPECT_NE(errors[rank].find("The total norm of order 2.0 for gradients from `parameters` is "
                                "non-finite"),
              std::string::npos)
        << "rank " << rank << ": '" << errors[rank] << "'";
  }
}

TEST(DistributedNorm, GroupsAreNamedAndRegisteredForTheCollectives) {
  std::vector<std::string> names(kWorld);
  run_ranks([&](int rank, const Group& group) {
    ASSERT_TRUE(group->getGroupName().empty());
    steadystep::get_total_norm(random_tensors(5), 2.0, false, group);
    names[rank] = group->getGroupName();
    // Torch's functional collectives find it by that name now, in this rank's registry.
    EXPECT_EQ(c10d::resolve_process_group(names[rank]).get(), group.get());
    // A second call finds it registered and uses it as is.
    steadystep::get_total_norm(random_tensors(5), 2.0, false, group);
    EXPECT_EQ(group->getGroupName(), names[rank]);
  });
  EXPECT_FALSE(names[0].empty());

  // A name the user gave and registered is kept.
  run_ranks([&](int rank, const Group& group) {
    group->setGroupName("users_group");
    c10d::register_process_group("users_group", group);
    steadystep::get_total_norm(random_tensors(5), 2.0, false, group);
    EXPECT_EQ(group->getGroupName(), "users_group");
    EXPECT_EQ(c10d::resolve_process_group("users_group").get(), group.get());
  });
}

TEST(DistributedNorm, ANameTakenByAnotherGroupIsRefused) {
  run_ranks(
      [&](int, const Group& group) {
        auto store = c10::make_intrusive<c10d::HashStore>();
        const Group other = gloo_group(store, 0, 1, kTimeout);
        other->setGroupName("taken");
        c10d::register_process_group("taken", other);
        group->setGroupName("taken");
        try {
          steadystep::get_total_norm(random_tensors(6), 2.0, false, group);
          ADD_FAILURE() << "expected an error";
        } catch (const c10::Error& e) {
          EXPECT_NE(std::string(e.what()).find("resolves that name to another process group"),
                    std::string::npos)
              << e.what();
        }
      },
      /*world=*/1);
}

TEST(DistributedNorm, ARankThatNeverJoinsIsAnErrorNotAHang) {
  // Rank 1 stays alive (its group open) but never enters the collective: rank 0 times out.
  const auto timeout = std::chrono::milliseconds(2000);
  const auto start = std::chrono::steady_clock::now();
  std::atomic<bool> done{false};
  std::string error;
  run_ranks(
      [&](int rank, const Group& group) {
        if (rank == 0) {
          try {
            steadystep::get_total_norm(random_tensors(7), 2.0, false, group);
          } catch (const std::exception& e) {
            error = e.what();
          }
          done = true;
        } else {
          while (!done && std::chrono::steady_clock::now() - start < 5 * timeout) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
      },
      kWorld, timeout);
  EXPECT_FALSE(error.empty()) << "rank 0 returned from a collective rank 1 never entered";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4 * timeout);
}

TEST(DistributedClip, EveryRankIsClippedByTheGlobalCoefficient) {
  const Tensors values = random_tensors(10);
  const Tensors grads = random_tensors(11);
  for (const double p : {2.0, 1.0, kInf}) {
    for (const double max_norm : {0.5, 1e6}) {
      for (const auto sharding : {Sharding::kHalfOfEachTensor, Sharding::kHalfTheTensors}) {
        const std::string what = std::string(name(sharding)) + ", p=" + std::to_string(p) +
                                 ", max_norm=" + std::to_string(max_norm);
        // One process, the whole model, torch's own clip_grad_norm_.
        Tensors whole = params_with_grads(values, grads);
        const double want_norm = torch::nn::utils::clip_grad_norm_(whole, max_norm, p);
        Tensors clipped;
        for (const auto& w : whole) {
          clipped.push_back(w.grad());
        }
        std::vector<Tensors> got(kWorld);
        std::vector<torch::Tensor> norms(kWorld);
        run_ranks([&](int rank, const Group& group) {
          Tensors mine =
              params_with_grads(shard(values, sharding, rank), shard(grads, sharding, rank));
          norms[rank] = steadystep::clip_grad_norm_(mine, max_norm, p, group);
          for (const auto& m : mine) {
            got[rank].push_back(m.grad());
          }
        });
        for (int rank = 0; rank < kWorld; ++rank) {
          EXPECT_NEAR(norms[rank].item<double>(), want_norm, 1e-6 * want_norm) << what;
          const Tensors want = shard(clipped, sharding, rank);
          ASSERT_EQ(got[rank].size(), want.size()) << what;
          for (size_t i = 0; i < want.size(); ++i) {
            if (max_norm > want_norm) {
              // No clipping needed: the coefficient is 1 and the gradients keep their bits.
              EXPECT_TRUE(torch::equal(got[rank][i], want[i])) << what << " rank " << rank;
            } else {
              // The coefficient from norms that may differ in the last bit: rel 1e-6.
              expect_close(got[rank][i], want[i], 1e-6,
                           what + " rank " + std::to_string(rank) + " grad " + std::to_string(i));
            }
          }
        }
      }
    }
  }
}

TEST(DistributedClip, NegativeMaxNormIsRefusedBeforeTheCollective) {
  run_ranks(
      [&](int, const Group& group) {
        Tensors mine = params_with_grads(random_tensors(12), random_tensors(13));
        EXPECT_THROW(steadystep::clip_grad_norm_(mine, -1.0, 2.0, group), c10::ValueError);
      },
      /*world=*/1);
}

// NOTE [Fused step over shards]: each rank holds half of every parameter (ZeRO-style) and steps
// it with its own FusedAdam / FusedSGD over the group; the halves, put together, must be the
// parameters that one process gets from the whole model with the same optimizer, and (to fp32
// rounding) with LibTorch's clip_grad_norm_ followed by its AdamW / SGD.
constexpr int kSteps = 6;

// The gradients of `steps` steps; at step `bad_step` (if any) one element that rank `bad_rank`
// holds is `bad_value` (inf or nan).
std::vector<Tensors> step_grads(int steps, int bad_step = -1, int bad_rank = -1,
                                double bad_value = kInf) {
  std::vector<Tensors> out;
  for (int s = 0; s < steps; ++s) {
    out.push_back(random_tensors(100 + s));
  }
  if (bad_step >= 0) {
    // Inside the half of tensor 1 (16 elements) that `bad_rank` holds.
    out[bad_step][1][bad_rank * 8 + 3] = bad_value;
  }
  return out;
}

template <typename Optimizer, typename Options>
Tensors train_whole(const Tensors& values, const std::vector<Tensors>& grads, Options options) {
  Tensors params = params_with_grads(values, grads[0]);
  Optimizer opt(params, options);
  for (const auto& g : grads) {
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].mutable_grad() = g[i].clone();
    }
    opt.step();
  }
  Tensors out;
  for (const auto& p : params) {
    out.push_back(p.detach().clone());
  }
  return out;
}

// LibTorch's own: clip_grad_norm_ then the optimizer step.
template <typename Optimizer, typename Options>
Tensors train_libtorch(const Tensors& values, const std::vector<Tensors>& grads, Options options,
                       double max_norm) {
  Tensors params = params_with_grads(values, grads[0]);
  Optimizer opt(params, options);
  for (const auto& g : grads) {
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].mutable_grad() = g[i].clone();
    }
    torch::nn::utils::clip_grad_norm_(params, max_norm, 2.0);
    opt.step();
  }
  Tensors out;
  for (const auto& p : params) {
    out.push_back(p.detach().clone());
  }
  return out;
}

// Each rank's half of the parameters after training with `options` plus the group.
template <typename Optimizer, typename Options>
std::vector<Tensors> train_sharded(const Tensors& values, const std::vector<Tensors>& grads,
                                   const Options& options,
                                   std::vector<torch::Tensor>* skipped = nullptr,
                                   std::vector<torch::Tensor>* last_norm = nullptr) {
  std::vector<Tensors> out(kWorld);
  if (skipped) {
    skipped->assign(kWorld, {});
  }
  if (last_norm) {
    last_norm->assign(kWorld, {});
  }
  run_ranks([&](int rank, const Group& group) {
    Tensors params = params_with_grads(shard(values, Sharding::kHalfOfEachTensor, rank),
                                       shard(grads[0], Sharding::kHalfOfEachTensor, rank));
    Options mine = options;
    Optimizer opt(params, mine.process_group(group));
    for (const auto& g : grads) {
      const Tensors half = shard(g, Sharding::kHalfOfEachTensor, rank);
      for (size_t i = 0; i < params.size(); ++i) {
        params[i].mutable_grad() = half[i];
      }
      opt.step();
    }
    for (const auto& p : params) {
      out[rank].push_back(p.detach().clone());
    }
    if (skipped) {
      (*skipped)[rank] = opt.skipped_steps();
    }
    if (last_norm) {
      (*last_norm)[rank] = opt.last_grad_norm();
    }
  });
  return out;
}

void expect_halves_match(const std::vector<Tensors>& halves, const Tensors& whole, double rtol,
                         const std::string& what) {
  for (int rank = 0; rank < kWorld; ++rank) {
    const Tensors want = shard(whole, Sharding::kHalfOfEachTensor, rank);
    ASSERT_EQ(halves[rank].size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      expect_close(halves[rank][i], want[i], rtol,
                   what + ": rank " + std::to_string(rank) + " param " + std::to_string(i));
    }
  }
}

TEST(DistributedFusedStep, FusedAdamOverShardsEqualsTheWholeModel) {
  const Tensors values = random_tensors(20);
  const auto grads = step_grads(kSteps);
  const auto options = steadystep::FusedAdamOptions(1e-2)
                           .weight_decay(0.1)
                           .decoupled_weight_decay(true)
                           .max_grad_norm(0.5);  // the grads' norm is ~10: every step clips
  std::vector<torch::Tensor> last_norm;
  const auto halves =
      train_sharded<steadystep::FusedAdam>(values, grads, options, nullptr, &last_norm);
  const Tensors whole = train_whole<steadystep::FusedAdam>(values, grads, options);
  // rel 1e-5 of the tensor's scale: fp32 rounding (the global norm may differ in the last bit).
  expect_halves_match(halves, whole, 1e-5, "vs FusedAdam on the whole model");
  const Tensors libtorch = train_libtorch<torch::optim::AdamW>(
      values, grads, torch::optim::AdamWOptions(1e-2).weight_decay(0.1), 0.5);
  expect_halves_match(halves, libtorch, 1e-5, "vs clip_grad_norm_ + torch::optim::AdamW");
  // The norm of the last step is the global one, the same bits on both ranks.
  ASSERT_TRUE(last_norm[0].defined());
  EXPECT_TRUE(torch::equal(last_norm[0], last_norm[1]));
  EXPECT_NEAR(last_norm[0].item<double>(), reference_norm(grads.back(), 2.0).item<double>(),
              1e-6 * last_norm[0].item<double>());
}

TEST(DistributedFusedStep, FusedSGDOverShardsEqualsTheWholeModel) {
  const Tensors values = random_tensors(21);
  const auto grads = step_grads(kSteps);
  const auto options = steadystep::FusedSGDOptions(1e-2)
                           .momentum(0.9)
                           .dampening(0.1)
                           .weight_decay(0.01)
                           .max_grad_norm(0.5);
  const auto halves = train_sharded<steadystep::FusedSGD>(values, grads, options);
  const Tensors whole = train_whole<steadystep::FusedSGD>(values, grads, options);
  expect_halves_match(halves, whole, 1e-5, "vs FusedSGD on the whole model");
  const Tensors libtorch = train_libtorch<torch::optim::SGD>(
      values, grads, torch::optim::SGDOptions(1e-2).momentum(0.9).dampening(0.1).weight_decay(0.01),
      0.5);
  expect_halves_match(halves, libtorch, 1e-5, "vs clip_grad_norm_ + torch::optim::SGD");
}

TEST(DistributedFusedStep, AnInfOrNanOnOneRankSkipsTheStepOnEveryRank) {
  const Tensors values = random_tensors(22);
  constexpr int kBadStep = 3;
  auto snapshot = [](const steadystep::FusedAdam& opt, const Tensors& params) {
    Tensors out;
    for (const auto& p : params) {
      out.push_back(p.detach().clone());
      const auto& s = static_cast<const steadystep::FusedAdamParamState&>(
          *opt.state().at(p.unsafeGetTensorImpl()));
      out.push_back(s.exp_avg().clone());
      out.push_back(s.exp_avg_sq().clone());
      out.push_back(s.step().clone());
    }
    return out;
  };
  // The inf-norm of a nan is reduced with a max, which does not carry nan from every rank.
  const std::vector<std::pair<double, double>> cases = {
      {2.0, kInf}, {2.0, std::nan("")}, {1.0, std::nan("")}, {kInf, kInf}, {kInf, std::nan("")}};
  for (const auto& [norm_type, bad_value] : cases) {
    for (int bad_rank = 0; bad_rank < kWorld; ++bad_rank) {
      const std::string what = "norm_type " + std::to_string(norm_type) + ", " +
                               std::to_string(bad_value) + " on rank " + std::to_string(bad_rank);
      const auto grads = step_grads(kSteps, kBadStep, bad_rank, bad_value);
      const auto options =
          steadystep::FusedAdamOptions(1e-2).max_grad_norm(0.5).norm_type(norm_type);
      std::vector<Tensors> state_before(kWorld), state_after(kWorld), final_halves(kWorld);
      std::vector<int64_t> skipped_before(kWorld), skipped(kWorld), skipped_end(kWorld);
      run_ranks([&](int rank, const Group& group) {
        Tensors params = params_with_grads(shard(values, Sharding::kHalfOfEachTensor, rank),
                                           shard(grads[0], Sharding::kHalfOfEachTensor, rank));
        auto mine = options;
        steadystep::FusedAdam opt(params, mine.process_group(group));
        for (int s = 0; s < kSteps; ++s) {
          const Tensors half = shard(grads[s], Sharding::kHalfOfEachTensor, rank);
          for (size_t i = 0; i < params.size(); ++i) {
            params[i].mutable_grad() = half[i];
          }
          if (s == kBadStep) {
            state_before[rank] = snapshot(opt, params);
            skipped_before[rank] = opt.skipped_steps().item<int64_t>();
          }
          opt.step();
          if (s == kBadStep) {
            state_after[rank] = snapshot(opt, params);
            skipped[rank] = opt.skipped_steps().item<int64_t>();
          }
        }
        skipped_end[rank] = opt.skipped_steps().item<int64_t>();
        for (const auto& p : params) {
          final_halves[rank].push_back(p.detach().clone());
        }
      });
      for (int rank = 0; rank < kWorld; ++rank) {
        // The rank without the bad value skips all the same: params and state bit-identical.
        ASSERT_EQ(state_before[rank].size(), state_after[rank].size()) << what;
        for (size_t i = 0; i < state_before[rank].size(); ++i) {
          EXPECT_TRUE(torch::equal(state_before[rank][i], state_after[rank][i]))
              << what << ": rank " << rank << " tensor " << i;
        }
        EXPECT_EQ(skipped_before[rank], 0) << what << ": rank " << rank;
        EXPECT_EQ(skipped[rank], 1) << what << ": rank " << rank;
        EXPECT_EQ(skipped_end[rank], 1) << what << ": rank " << rank;
      }
      // Training goes on as one process does when it skips that step.
      const Tensors whole = train_whole<steadystep::FusedAdam>(values, grads, options);
      expect_halves_match(final_halves, whole, 1e-5, what + ", after the skipped step");
    }
  }
}

TEST(DistributedFusedStep, ARankWithoutGradientsStillTakesPart) {
  // Rank 1's parameters get no gradient (e.g. a frozen stage): it still joins the norm, so rank
  // 0 is clipped by the norm of all gradients and nobody waits.
  const Tensors values = random_tensors(23);
  const auto grads = step_grads(2);
  std::vector<Tensors> got(kWorld);
  run_ranks([&](int rank, const Group& group) {
    Tensors params = shard(values, Sharding::kAllOnRankZero, rank);
    if (rank == 1) {
      params = {values[0].clone().requires_grad_()};  // no .grad
    }
    for (auto& p : params) {
      p.requires_grad_();
    }
    steadystep::FusedAdam opt(
        params, steadystep::FusedAdamOptions(1e-2).max_grad_norm(0.5).process_group(group));
    for (const auto& g : grads) {
      if (rank == 0) {
        for (size_t i = 0; i < params.size(); ++i) {
          params[i].mutable_grad() = g[i].clone();
        }
      }
      opt.step();
    }
    for (const auto& p : params) {
      got[rank].push_back(p.detach().clone());
    }
  });
  const Tensors whole = train_whole<steadystep::FusedAdam>(
      values, grads, steadystep::FusedAdamOptions(1e-2).max_grad_norm(0.5));
  ASSERT_EQ(got[0].size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    expect_close(got[0][i], whole[i], 1e-5, "rank 0 param " + std::to_string(i));
  }
  EXPECT_TRUE(torch::equal(got[1][0], values[0]));
}

TEST(DistributedFusedStep, ARankWithoutGradientsKeepsTheGuardInStep) {
  // Rank 1 has no gradient to step: its guard still decides on the global norm, so the guard
  // states and skip counts of both ranks stay equal (one rank's next step would otherwise clip
  // by other statistics and the shards would drift apart).
  const Tensors values = random_tensors(29);
  auto grads = step_grads(6);
  for (auto& g : grads[4]) {
    g = g * 1e3;  // a spike the SpikeSkip vetoes
  }
  std::vector<at::Tensor> zscore_states(kWorld), skip_states(kWorld);
  std::vector<int64_t> skipped(kWorld);
  run_ranks([&](int rank, const Group& group) {
    Tensors params = shard(values, Sharding::kAllOnRankZero, rank);
    if (rank == 1) {
      params = {values[0].clone()};  // no .grad
    }
    for (auto& p : params) {
      p.requires_grad_();
    }
    auto zscore = std::make_shared<steadystep::ZScoreClip>(
        steadystep::ZScoreClipOptions().warmup_steps(2).max_grad_norm(std::nullopt));
    auto skip = std::make_shared<steadystep::SpikeSkip>(
        steadystep::SpikeSkipOptions().max_norm(50.0).z_thresh(std::nullopt));
    steadystep::FusedAdam opt(
        params, steadystep::FusedAdamOptions(1e-2).guard({skip, zscore}).process_group(group));
    for (const auto& g : grads) {
      if (rank == 0) {
        for (size_t i = 0; i < params.size(); ++i) {
          params[i].mutable_grad() = g[i].clone();
        }
      }
      opt.step();
    }
    zscore_states[rank] = zscore->state().clone();
    skip_states[rank] = skip->state().clone();
    skipped[rank] = opt.skipped_steps().item<int64_t>();
  });
  EXPECT_EQ(skipped[0], 1);
  EXPECT_EQ(skipped[1], skipped[0]);
  EXPECT_TRUE(torch::equal(zscore_states[1], zscore_states[0]));
  EXPECT_TRUE(torch::equal(skip_states[1], skip_states[0]));
  EXPECT_EQ(zscore_states[0][0].item<double>(), 5.0);  // the vetoed step is not counted
}

TEST(DistributedFusedStep, AGroupWithAnotherProcessGroupIsRefused) {
  run_ranks(
      [&](int, const Group& group) {
        Tensors a = {torch::zeros({3}, torch::requires_grad())};
        Tensors b = {torch::zeros({2}, torch::requires_grad())};
        std::vector<torch::optim::OptimizerParamGroup> groups;
        groups.emplace_back(a);
        // A group with options of its own, without the group.
        groups.emplace_back(b, std::make_unique<steadystep::FusedAdamOptions>(1e-2));
        try {
          steadystep::FusedAdam opt(groups,
                                    steadystep::FusedAdamOptions(1e-2).process_group(group));
          ADD_FAILURE() << "expected an error";
        } catch (const c10::ValueError& e) {
          EXPECT_NE(std::string(e.what()).find("param group 1 sets process_group unset"),
                    std::string::npos)
              << e.what();
        }
      },
      /*world=*/1);
}

TEST(DistributedFusedStep, TheGroupSurvivesASaveAndALoad) {
  run_ranks(
      [&](int, const Group& group) {
        Tensors params = params_with_grads(random_tensors(24), random_tensors(25));
        steadystep::FusedAdam opt(
            params, steadystep::FusedAdamOptions(1e-2).max_grad_norm(1.0).process_group(group));
        opt.step();
        std::stringstream archive;
        torch::save(opt, archive);
        // A LibTorch AdamW reads it: nothing in it that LibTorch cannot read.
        torch::optim::AdamW libtorch(params);
        archive.seekg(0);
        torch::load(libtorch, archive);
        // Loaded back, the optimizer keeps its own group.
        archive.seekg(0);
        torch::load(opt, archive);
        const auto& o = static_cast<const steadystep::FusedAdamOptions&>(opt.defaults());
        EXPECT_EQ(o.process_group().get(), group.get());
        const auto& g0 =
            static_cast<const steadystep::FusedAdamOptions&>(opt.param_groups()[0].options());
        EXPECT_EQ(g0.process_group().get(), group.get());
        opt.step();
      },
      /*world=*/1);
}

}  // namespace
