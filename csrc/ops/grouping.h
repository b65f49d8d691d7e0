#pragma once

// How the composite ops split their tensor lists: by device (as torch's
// _group_tensors_by_device_and_dtype does; our kernels take mixed dtypes), and into the
// tensors the multi-tensor kernels take and the ones left to plain ATen ops.

#include "checks.h"

#include <ATen/core/Tensor.h>

#include <vector>

namespace steadystep {

/// Tensors by device, devices in first-seen order.
struct DeviceGroups {
  std::vector<c10::Device> devices;
  std::vector<std::vector<at::Tensor>> tensors;

  void add(const at::Tensor& t) {
    size_t g = 0;
    while (g < devices.size() && devices[g] != t.device()) {
      ++g;
    }
    if (g == devices.size()) {
      devices.push_back(t.device());
      tensors.emplace_back();
    }
    tensors[g].push_back(t);
  }
};

/// True when an in-place multi-tensor kernel can update `t`: a kernel dtype, and one dense
/// block of memory (contiguous or a permutation of it). Other views go through ATen.
inline bool in_place_kernel_tensor(const at::Tensor& t) {
  return t.layout() == at::kStrided && is_kernel_dtype(t.scalar_type()) &&
         t.is_non_overlapping_and_dense();
}

}  // namespace steadystep
