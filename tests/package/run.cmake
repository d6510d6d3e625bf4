cmake_minimum_required(VERSION 3.25)
# Installs the build tree into a scratch prefix, then configures, builds and runs the consumer
# project against it with find_package(annals).
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
step(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
step(${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build"
     "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" -DCMAKE_BUILD_TYPE=Release)
step(${CMAKE_COMMAND} --build "${WORK_DIR}/build" -j2)
step("${WORK_DIR}/build/consumer" "${WORK_DIR}/consumer.db")
step("${WORK_DIR}/build/relay_consumer")
step("${WORK_DIR}/build/http_consumer" "${WORK_DIR}/http_consumer.db")
message(STATUS "find_package(annals) consumer built and ran")
