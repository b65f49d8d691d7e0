#include "ops/optim_checks.h"

#include "ops/norm_kind.h"

#include <c10/util/Exception.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string_view>

namespace steadystep {

std::string format_float(double value) {
  if (std::isnan(value)) {
    return "nan";
  }
  if (std::isinf(value)) {
    return value > 0 ? "inf" : "-inf";
  }
  // Shortest round-trip digits in scientific form, e.g. "1.5e-07" -> digits "15", exponent -7.
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  const std::string_view text(buffer, static_cast<size_t>(result.ptr - buffer));
  const size_t e = text.find('e');
  std::string_view mantissa = text.substr(0, e);
  const int exponent = std::atoi(std::string(text.substr(e + 1)).c_str());
  std::string sign;
  if (!mantissa.empty() && mantissa.front() == '-') {
    sign = "-";
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') {
      digits.push_back(c);
    }
  }
  const int n = static_cast<int>(digits.size());
  std::string out = sign;
  if (exponent < -4 || exponent >= 16) {
    // Python: "1e-08", "1.5e+16" (at least two exponent digits).
    out += digits.substr(0, 1);
    if (n > 1) {
      out += "." + digits.substr(1);
    }
    const int magnitude = std::abs(exponent);
    out += exponent < 0 ? "e-" : "e+";
    if (magnitude < 10) {
      out += "0";
    }
    out += std::to_string(magnitude);
  } else if (exponent < 0) {
    out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else if (n <= exponent + 1) {
    out += digits + std::string(static_cast<size_t>(exponent + 1 - n), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(exponent + 1)) + "." +
           digits.substr(static_cast<size_t>(exponent + 1));
  }
  return out;
}

void check_lr(double lr) {
  TORCH_CHECK_VALUE(lr >= 0, "Invalid learning rate: ", format_float(lr));
}

void check_adam_hyper(const AdamHyper& h) {
  TORCH_CHECK_VALUE(h.eps >= 0, "Invalid epsilon value: ", format_float(h.eps));
  TORCH_CHECK_VALUE(h.beta1 >= 0 && h.beta1 < 1,
                    "Invalid beta parameter at index 0: ", format_float(h.beta1));
  TORCH_CHECK_VALUE(h.beta2 >= 0 && h.beta2 < 1,
                    "Invalid beta parameter at index 1: ", format_float(h.beta2));
  TORCH_CHECK_VALUE(h.weight_decay >= 0,
                    "Invalid weight_decay value: ", format_float(h.weight_decay));
}

void check_sgd_hyper(const SGDHyper& h) {
  TORCH_CHECK_VALUE(h.momentum >= 0, "Invalid momentum value: ", format_float(h.momentum));
  TORCH_CHECK_VALUE(h.weight_decay >= 0,
                    "Invalid weight_decay value: ", format_float(h.weight_decay));
  TORCH_CHECK_VALUE(!h.nesterov || (h.momentum > 0 && h.dampening == 0),
                    "Nesterov momentum requires a momentum and zero dampening");
}

void check_clip_settings(std::optional<double> max_grad_norm, double norm_type) {
  TORCH_CHECK_VALUE(!max_grad_norm || *max_grad_norm > 0,
                    "max_grad_norm must be > 0 (or None to disable clipping), got ",
                    format_float(max_grad_norm.value_or(0)));
  NormKind kind;
  TORCH_CHECK_VALUE(kernel_norm_kind(norm_type, &kind), "norm_type must be > 0 or inf, got ",
                    format_float(norm_type));
}

}  // namespace steadystep
