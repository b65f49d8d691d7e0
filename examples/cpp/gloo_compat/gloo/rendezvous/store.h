#pragma once
// Stand-in for gloo's header (see ../../../gloo_compat.cmake): the base class of
// ProcessGroupGloo::GlooStore, with the members that class overrides. GlooStore is created inside
// libtorch only; a program that includes this never constructs one.

#include <chrono>
#include <string>
#include <vector>

namespace gloo::rendezvous {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys,
                    const std::chrono::milliseconds& timeout) = 0;
};

}  // namespace gloo::rendezvous
