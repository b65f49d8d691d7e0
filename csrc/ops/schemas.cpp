// NOTE [Op registry]: every steadystep op is declared here, once. Kernels register themselves
// per dispatch key in their own files (csrc/cpu, csrc/meta, cuda/); composite ops, which are
// written with other ops and so serve every backend, register beside their definition.

#include <torch/library.h>

TORCH_LIBRARY(steadystep, m) {
  // The norm of all `tensors` taken together as one vector, as torch.nn.utils.get_total_norm:
  // a 0-dim tensor on tensors[0]'s device, of their promoted dtype.
  m.def(
      "get_total_norm(Tensor[] tensors, float norm_type=2.0, bool error_if_nonfinite=False) -> "
      "Tensor");
  // Backend kernel of get_total_norm: tensors of one device, p > 0 or inf; returns the norm as
  // a 0-dim fp32 tensor (fp64 if any input is fp64).
  m.def("_total_norm(Tensor[] tensors, float norm_type) -> Tensor");
}
