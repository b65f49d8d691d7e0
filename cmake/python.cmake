# The Python interpreter and pybind11 for steadystep._C and the test driver.
find_package(Python REQUIRED COMPONENTS Interpreter Development.Module)
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import pybind11, sys; sys.stdout.write(pybind11.get_cmake_dir())"
  OUTPUT_VARIABLE _steadystep_pybind11_dir RESULT_VARIABLE _rc)
if(_rc EQUAL 0)
  list(APPEND CMAKE_PREFIX_PATH "${_steadystep_pybind11_dir}")
endif()
find_package(pybind11 CONFIG REQUIRED)
