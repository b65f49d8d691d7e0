# ctest driver: install steadystep into a scratch prefix, then configure, build and run a
# separate CMake project (CONSUMER_SOURCE_DIR) against that prefix only (plus LibTorch), as a
# user's project would. RUN is the program (and its arguments, ;-separated) to run afterwards.
set(prefix "${STEADYSTEP_BUILD_DIR}/consumer/install")
get_filename_component(name "${CONSUMER_SOURCE_DIR}" NAME)
set(build "${STEADYSTEP_BUILD_DIR}/consumer/build-${name}")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install "${STEADYSTEP_BUILD_DIR}" --prefix "${prefix}")
run(${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${build}" -G "${CMAKE_GENERATOR}"
    "-Dsteadystep_DIR=${prefix}/lib/cmake/steadystep" "-DTorch_DIR=${TORCH_PREFIX}/Torch"
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build "${build}")
string(REPLACE "|" ";" run_args "${RUN}")
list(GET run_args 0 program)
list(REMOVE_AT run_args 0)
run("${build}/${program}" ${run_args})
