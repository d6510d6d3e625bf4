cmake_minimum_required(VERSION 3.25)
# Installs the build tree into a scratch prefix, then configures, builds and runs the consumer
# projects against it with find_package(annals): one SQLite-only (as on a machine without
# libpq, and its program must not need libpq), one with every part.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
set(prefix "${WORK_DIR}/prefix")
step(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
foreach(installed bin/annals share/annals/proto/annals/v1/envelope.proto
                  lib/cmake/annals/annals-protobuf.cmake)
  if(NOT EXISTS "${prefix}/${installed}")
    message(FATAL_ERROR "cmake --install did not install ${installed}")
  endif()
endforeach()

# The consumers compile through ccache when there is one, as the build tree does (CI's time).
find_program(ccache_program ccache)
set(launcher "")
if(ccache_program)
  set(launcher "-DCMAKE_CXX_COMPILER_LAUNCHER=${ccache_program}")
endif()
foreach(kind sqlite_only full)
  set(extra "${launcher}")
  if(kind STREQUAL "sqlite_only")
    list(APPEND extra -DCMAKE_DISABLE_FIND_PACKAGE_PostgreSQL=ON)
  endif()
  step(${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/${kind}" -DANNALS_KIND=${kind}
       "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_BUILD_TYPE=Release ${extra})
  step(${CMAKE_COMMAND} --build "${WORK_DIR}/${kind}" -j2)
  step("${WORK_DIR}/${kind}/consumer" "${WORK_DIR}/${kind}.db")
endforeach()

# The SQLite-only program needs no libpq.
execute_process(COMMAND readelf -d "${WORK_DIR}/sqlite_only/consumer" OUTPUT_VARIABLE dyn
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT dyn MATCHES "libsqlite3")
  message(FATAL_ERROR "readelf -d did not list the consumer's libraries (${rc}):\n${dyn}")
endif()
if(dyn MATCHES "libpq")
  message(FATAL_ERROR "the SQLite-only consumer needs libpq:\n${dyn}")
endif()

# Asking for a part whose dependency is missing fails find_package, naming it.
execute_process(COMMAND ${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/no_libpq"
                -DANNALS_KIND=full "-DCMAKE_PREFIX_PATH=${prefix}"
                -DCMAKE_DISABLE_FIND_PACKAGE_PostgreSQL=ON
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc EQUAL 0 OR NOT err MATCHES "annals::postgres needs PostgreSQL's libpq")
  message(FATAL_ERROR "find_package(annals COMPONENTS postgres) without libpq (${rc}):\n${err}")
endif()

step("${WORK_DIR}/full/shop_consumer" "${WORK_DIR}/shop.db")
step("${WORK_DIR}/full/relay_consumer")
step("${WORK_DIR}/full/http_consumer" "${WORK_DIR}/http_consumer.db")
# The installed tool reads what the consumer wrote.
execute_process(COMMAND "${prefix}/bin/annals" --db "${WORK_DIR}/full.db" streams
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "counter-1")
  message(FATAL_ERROR "the installed annals tool did not list counter-1 (${rc}):\n${out}")
endif()
message(STATUS "find_package(annals) consumers built and ran; the installed tool read the store")
