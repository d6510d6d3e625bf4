# annals_add_proto_library(<target> <file.proto>... [IMPORT_DIRS <dir>...])
#
# Generates C++ from an application's .proto files into a static library <target> that links
# protobuf and puts the generated headers on its users' include path, so that events are
# declared in one line:
#
#   annals_add_proto_library(bank_events proto/bank/v1/events.proto)
#   target_link_libraries(bank PRIVATE annals::sqlite bank_events)
#
# Files are found and generated relative to IMPORT_DIRS (default: the current source
# directory), into the current binary directory: proto/bank/v1/events.proto with IMPORT_DIRS
# proto gives #include "bank/v1/events.pb.h".
# Installed with Annals (find_package(annals) includes it); needs find_package(Protobuf).
function(annals_add_proto_library target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "IMPORT_DIRS")
  if(NOT arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "annals_add_proto_library(${target}): no .proto file given")
  endif()
  foreach(file IN LISTS arg_UNPARSED_ARGUMENTS)
    if(NOT file MATCHES "\\.proto$")
      message(FATAL_ERROR "annals_add_proto_library(${target}): ${file} is not a .proto file")
    endif()
  endforeach()
  if(NOT COMMAND protobuf_generate)
    find_package(Protobuf REQUIRED)
  endif()
  if(NOT arg_IMPORT_DIRS)
    set(arg_IMPORT_DIRS ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  add_library(${target} STATIC ${arg_UNPARSED_ARGUMENTS})
  protobuf_generate(TARGET ${target} LANGUAGE cpp IMPORT_DIRS ${arg_IMPORT_DIRS})
  target_include_directories(${target} PUBLIC ${CMAKE_CURRENT_BINARY_DIR})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf)
endfunction()
