#pragma once

// The "zscore" guard policy's args and sizes, for the zscore_clip_ op and the ZScoreClip class.

#include <c10/util/string_view.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace steadystep::guard {

// Length of the warmup buffer in the state: max(warmup_steps, 1).
int64_t zscore_buffer_size(int64_t warmup_steps);

// The policy's args (NOTE [Guard policies]) from ZClip's options; c10::ValueError with ZClip's
// messages for a bad mode or clip_option.
std::vector<double> zscore_args(double alpha, double z_thresh, std::optional<double> max_grad_norm,
                                double eps, int64_t warmup_steps, c10::string_view mode,
                                c10::string_view clip_option, double clip_factor,
                                bool skip_update_on_spike);

}  // namespace steadystep::guard
