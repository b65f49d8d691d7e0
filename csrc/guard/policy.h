#pragma once

// NOTE [Guard policies]: a gradient guard is a list of policies, each a pure function of the
// step's gradient norm and its own state vector (fp64, 1-D, on the device), which returns its
// next state, a clip coefficient and/or a skip decision as device tensors. The standalone clip
// ops (zscore_clip_, percentile_clip_) and the fused optimizer steps (fused_adam_, fused_sgd_:
// guard_states / guards / guard_args) call the same functions, so a policy's math lives here
// once and nothing reads a device value on the host.
//
// Policies are named by a kind string and configured by a flat list of doubles (the op schemas
// carry `str[] guards, float[] guard_args`: one list for all policies, each taking num_args);
// an absent optional value is nan, a choice is its index (see each kind's args below). The
// frontends (C++ GradientGuard subclasses, Python steadystep.guard classes) build these lists.

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace steadystep::guard {

// What one policy decides for one step. All 0-dim (state: 1-D) on the state's device.
struct Verdict {
  at::Tensor state;  // the policy's state after this step (written back by the caller, or not)
  at::Tensor coef;   // factor on the gradients, fp64 (undefined: 1)
  at::Tensor skip;   // bool, skip this step (undefined: never)
};

// Clip policies scale the gradients; skip policies veto the step. A guard holds at most one
// clip policy; skip policies decide first (a skipped step leaves the clip policy's state as is).
enum class Role { kClip, kSkip };

struct Policy {
  const char* kind;
  Role role;
  size_t num_args;
  // State vector length for these args.
  int64_t (*state_size)(c10::ArrayRef<double> args);
  // c10::ValueError for bad args (before any state changes).
  void (*check)(c10::ArrayRef<double> args);
  // norm: the gradient norm in its accumulate dtype (fp32, fp64 for fp64 gradients), unscaled;
  // reported_norm: the same norm as clip_grad_norm_ returns it (the gradients' dtype); the fused
  // steps pass the accumulate-dtype norm as both. Both 0-dim on the state's device.
  Verdict (*decide)(const at::Tensor& norm, const at::Tensor& reported_norm,
                    const at::Tensor& state, c10::ArrayRef<double> args);
};

// Registers a policy at library load: `static const PolicyRegistrar registrar(kMyPolicy);` in
// the policy's own file (a kind registered twice is a bug, caught at load).
struct PolicyRegistrar {
  explicit PolicyRegistrar(const Policy& policy);
};

// The registered policy of `kind` (c10::ValueError naming the known kinds otherwise).
const Policy& find_policy(c10::string_view kind);

// A fresh state for policy `kind` with `args`: zeros, fp64, on `options`' device.
at::Tensor new_state(c10::string_view kind, c10::ArrayRef<double> args,
                     const at::TensorOptions& options);

// Checks a whole guard (kinds, args, states) before a step: known kinds, args count, state
// shapes and dtypes, at most one clip policy. `who` names the op in the messages.
void check_guard(const char* who, at::TensorList states, c10::ArrayRef<std::string> kinds,
                 c10::ArrayRef<double> args);

// The guard's decision for one step, with the states updated in place: skip policies first,
// then the clip policy. `skipped` (bool, undefined: no) is the step's earlier verdict (a
// non-finite norm, GradScaler's found_inf): such a step updates no state (a non-finite norm
// would poison the statistics). A step a skip policy skips updates the skip policies' own
// windows (so that a lasting shift of the norm stops being an outlier) but not the clip
// policy's statistics. Returns coef (fp64; undefined: no clip policy) and skip (bool;
// undefined: no policy and no earlier verdict).
struct Decision {
  at::Tensor coef;
  at::Tensor skip;
};
Decision guard_step(const at::Tensor& norm, const at::Tensor& reported_norm, at::TensorList states,
                    c10::ArrayRef<std::string> kinds, c10::ArrayRef<double> args,
                    const at::Tensor& skipped);

// One step of a standalone clip op (zscore_clip_, percentile_clip_) with the single policy
// `kind`: the L2 norm of `grads` (or `total_norm`) in the accumulate dtype and as
// clip_grad_norm_ returns it (the grads' dtype), the policy's decision on it (the state
// updated in place), the grads scaled by its coefficient (scale_grads_). Returns the norm as
// clip_grad_norm_ does. `who` names the op in the messages.
at::Tensor clip_step_(const char* who, at::TensorList grads, const at::Tensor& state,
                      const std::string& kind, const std::vector<double>& args,
                      const std::optional<at::Tensor>& total_norm, bool coef_as_float);

// Scales `grads` in place by the 0-dim `coef`: as torch's clip_grads_with_norm_ does
// (foreach_mul_ by a tensor: the multi-tensor kernel per device), or, with `coef_as_float`, as
// `grad.mul_(float(coef))` does (bf16/fp16 grads read the factor in fp32).
void scale_grads_(at::TensorList grads, const at::Tensor& coef, bool coef_as_float);

// An optional double carried in args (nan: none).
inline bool has_value(double arg) {
  return arg == arg;
}

}  // namespace steadystep::guard
