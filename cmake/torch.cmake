# Finds LibTorch. Without Torch_DIR or a CMAKE_PREFIX_PATH that holds it, ask the Python
# interpreter (Python_EXECUTABLE, else the project's .venv, else python3) where its torch is:
# the pip wheel ships LibTorch's CMake package.
if(NOT Torch_DIR)
  if(NOT Python_EXECUTABLE)
    if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python")
      set(Python_EXECUTABLE "${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python")
    else()
      find_program(Python_EXECUTABLE NAMES python3 python REQUIRED)
    endif()
  endif()
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import torch, sys; sys.stdout.write(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _steadystep_torch_prefix
    RESULT_VARIABLE _steadystep_torch_rc)
  if(_steadystep_torch_rc EQUAL 0)
    list(APPEND CMAKE_PREFIX_PATH "${_steadystep_torch_prefix}")
  endif()
endif()

# Caffe2's cuda.cmake overrides CMAKE_CUDA_ARCHITECTURES (it wants TORCH_CUDA_ARCH_LIST, which
# we set from the same list): keep ours out of its way and put it back afterwards.
set(_steadystep_cuda_archs "${CMAKE_CUDA_ARCHITECTURES}")
unset(CMAKE_CUDA_ARCHITECTURES)
unset(CMAKE_CUDA_ARCHITECTURES CACHE)
find_package(Torch REQUIRED)
if(STEADYSTEP_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES "${_steadystep_cuda_archs}")
endif()
# The prefix that holds TorchConfig.cmake, for projects we configure (the consumer test).
get_filename_component(STEADYSTEP_TORCH_PREFIX "${Torch_DIR}/.." ABSOLUTE)

# torch/lib, for the RPATH of what we install (tests, the demo, the library itself).
get_target_property(_steadystep_c10_location c10 IMPORTED_LOCATION_RELEASE)
if(NOT _steadystep_c10_location)
  get_target_property(_steadystep_c10_location c10 IMPORTED_LOCATION)
endif()
get_filename_component(STEADYSTEP_TORCH_LIB_DIR "${_steadystep_c10_location}" DIRECTORY)
message(STATUS "steadystep: torch ${Torch_VERSION} from ${STEADYSTEP_TORCH_LIB_DIR}")
