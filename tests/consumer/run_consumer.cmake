# ctest driver: install steadystep into a scratch prefix, then configure, build and run the
# consumer project against that prefix only (plus LibTorch).
set(prefix "${STEADYSTEP_BUILD_DIR}/consumer/install")
set(build "${STEADYSTEP_BUILD_DIR}/consumer/build")
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
run("${build}/consumer")
