#pragma once
// Stand-in for gloo's header (see ../../gloo_compat.cmake): the one member of gloo::Context that
// ProcessGroupGloo.hpp names (in an inline function that is defined, and called, in libtorch).

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo
