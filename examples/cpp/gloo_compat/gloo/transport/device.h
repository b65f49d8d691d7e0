#pragma once
// Stand-in for gloo's header (see ../../../gloo_compat.cmake): ProcessGroupGloo.hpp holds these
// only through shared_ptr / unique_ptr, made and used inside libtorch.

namespace gloo::transport {

class Device;
class UnboundBuffer;

}  // namespace gloo::transport
