# STEADYSTEP_SANITIZE: our C++ (library, CPU kernels, GoogleTest suite, examples) built with
# AddressSanitizer + UndefinedBehaviorSanitizer. `make sanitize` builds it in build-sanitize/ and
# runs ctest; CI runs it before `make test`. LibTorch itself is not instrumented: ASan still sees
# every heap access our code makes (malloc/free are intercepted process-wide), UBSan sees only
# our code. CPU only: nvcc does not take these flags and the GPU kernels never run here.
# The run-time options live in CMakePresets.json's "sanitize" test preset (JSON has no comments):
#   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1  a finding fails the test, with its stack;
#   ASAN_OPTIONS=check_initialization_order=1         static-init order bugs in our globals too;
#   ASAN_OPTIONS=detect_stack_use_after_return=1      a reference to a dead local is caught too.
# LeakSanitizer stays on and needs no suppressions (LibTorch's static state is still reachable
# at exit). Built: the test suite and the demo (the sanitize_demo test); ctest leaves out the
# tests labelled no_sanitize (separate CMake projects, linked without the sanitizer runtime).
option(STEADYSTEP_SANITIZE "Build with -fsanitize=address,undefined (CPU only)" OFF)
if(STEADYSTEP_SANITIZE)
  if(STEADYSTEP_WITH_CUDA)
    message(FATAL_ERROR "STEADYSTEP_SANITIZE needs STEADYSTEP_WITH_CUDA=OFF")
  endif()
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "STEADYSTEP_SANITIZE needs GCC or Clang")
  endif()
  # -fno-sanitize-recover: undefined behaviour stops the test (a finding fails ctest) instead of
  # printing a line nobody reads. -O1 keeps the build and the tests quick enough for CI; -g1
  # (line tables) is all the stack traces need and keeps torch-heavy objects small.
  set(_steadystep_sanitize_flags
    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g1)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_steadystep_sanitize_flags}>")
  add_link_options(-fsanitize=address,undefined)
  message(STATUS "steadystep: built with AddressSanitizer + UndefinedBehaviorSanitizer")
endif()
