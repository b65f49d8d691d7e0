// GradientGuard: the state handling every policy class shares (lazy placement, archives), and
// AdaptiveGradClip, the stateless AGC guard.

#include <steadystep/guard.h>

#include "guard/policy.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace steadystep {

int64_t GradientGuard::state_size() const {
  return guard::find_policy(kind()).state_size(args());
}

const at::Tensor& GradientGuard::state_on(const c10::Device& device) {
  if (!state_.defined()) {
    state_ = guard::new_state(kind(), args(), at::TensorOptions().device(device));
  } else if (state_.device() != device) {
    state_ = state_.to(device);  // a loaded checkpoint, once
  }
  return state_;
}

const at::Tensor& GradientGuard::state_for(at::TensorList grads,
                                           const std::optional<at::Tensor>& total_norm) {
  return state_on(total_norm.has_value() ? total_norm->device()
                  : grads.empty()        ? c10::Device(c10::kCPU)
                                         : grads[0].device());
}

at::Tensor GradientGuard::slot(int64_t i) const {
  TORCH_CHECK(state_.defined(), name(), ": no step taken yet");
  return state_.select(0, i);
}

void GradientGuard::save(torch::serialize::OutputArchive& archive) const {
  archive.write("kind", c10::IValue(kind()));
  archive.write("state_size", c10::IValue(state_size()));
  if (state_.defined()) {
    archive.write("state", state_, /*is_buffer=*/true);
  }
}

void GradientGuard::load(torch::serialize::InputArchive& archive) {
  c10::IValue kind_value;
  c10::IValue size_value;
  archive.read("kind", kind_value);
  archive.read("state_size", size_value);
  TORCH_CHECK_VALUE(kind_value.toStringRef() == kind(), name(), ": the checkpoint holds a '",
                    kind_value.toStringRef(), "' guard, not '", kind(), "'");
  TORCH_CHECK_VALUE(size_value.toInt() == state_size(), name(), ": the checkpoint's state has ",
                    size_value.toInt(), " elements, this ", name(), "'s options need ",
                    state_size(), " (warmup_steps / history_length / window differ)");
  at::Tensor state;
  if (archive.try_read("state", state, /*is_buffer=*/true)) {
    state_ = state.to(at::kDouble);
  } else {
    state_ = at::Tensor();
  }
}

AdaptiveGradClip::AdaptiveGradClip(AdaptiveGradClipOptions options) : options_(std::move(options)) {
  TORCH_CHECK_VALUE(options_.clip_factor() > 0, "AdaptiveGradClip: clip_factor must be > 0, got ",
                    options_.clip_factor());
  TORCH_CHECK_VALUE(options_.eps() >= 0, "AdaptiveGradClip: eps must be >= 0, got ",
                    options_.eps());
  TORCH_CHECK_VALUE(options_.norm_type() > 0, "AdaptiveGradClip: norm_type must be > 0, got ",
                    options_.norm_type());
}

std::vector<double> AdaptiveGradClip::args() const {
  return {options_.clip_factor(), options_.eps(), options_.norm_type()};
}

}  // namespace steadystep
