# NOTE [gloo headers]: a C++ program builds a gloo process group with
# torch/csrc/distributed/c10d/ProcessGroupGloo.hpp, which includes a few of gloo's own headers.
# pip's torch wheels ship that header and the gloo library inside libtorch_cpu, but not gloo's
# headers. Where they are missing, gloo_compat/ stands in for them: it declares only the gloo
# names ProcessGroupGloo.hpp mentions, none of which a program that constructs and uses a
# ProcessGroupGloo touches (libtorch creates and uses the gloo objects), so the class layout and
# the calls are those of the real header. A LibTorch that ships gloo's headers uses its own.
#
#   steadystep_use_gloo(<target>): compile <target> against c10d's ProcessGroupGloo.hpp.
function(steadystep_use_gloo target)
  get_target_property(_torch_includes torch INTERFACE_INCLUDE_DIRECTORIES)
  find_path(STEADYSTEP_GLOO_INCLUDE_DIR gloo/algorithm.h PATHS ${_torch_includes}
    NO_DEFAULT_PATH)
  # USE_C10D_GLOO: how torch's own build compiles against ProcessGroupGloo.hpp.
  target_compile_definitions(${target} PRIVATE USE_C10D_GLOO)
  if(NOT STEADYSTEP_GLOO_INCLUDE_DIR)
    target_include_directories(${target} PRIVATE ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/gloo_compat)
  endif()
endfunction()
