# annals_add_proto_library(<target> <file.proto>... [IMPORT_DIRS <dir>...])
#
# Generates C++ from an application's .proto files into a static library <target> that links
# protobuf and puts the generated headers on its users' include path, so that events are
# declared in one line:
#
#   annals_add_proto_library(app_events proto/app/v1/events.proto IMPORT_DIRS proto)
#   target_link_libraries(app PRIVATE annals::sqlite app_events)
#
# Each file is named relative to the first of IMPORT_DIRS (default: the current source
# directory) that holds it, as protoc's -I does, and so are its generated files (in the
# current binary directory) and the imports between the files: proto/app/v1/events.proto with
# IMPORT_DIRS proto is `import "app/v1/events.proto";` in .proto files and
# `#include "app/v1/events.pb.h"` in C++. Needs protoc (Debian: protobuf-compiler).
# Installed with Annals (find_package(annals) includes it).
function(annals_add_proto_library target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "IMPORT_DIRS")
  if(NOT arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "annals_add_proto_library(${target}): no .proto file given")
  endif()
  if(NOT TARGET protobuf::protoc)
    find_package(Protobuf REQUIRED)
  endif()
  if(NOT TARGET protobuf::protoc)
    message(FATAL_ERROR "annals_add_proto_library(${target}): protoc was not found "
                        "(Debian: apt-get install protobuf-compiler)")
  endif()
  if(NOT arg_IMPORT_DIRS)
    set(arg_IMPORT_DIRS ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  set(roots)
  set(include_args)
  foreach(dir IN LISTS arg_IMPORT_DIRS)
    get_filename_component(abs "${dir}" ABSOLUTE)
    list(APPEND roots "${abs}")
    list(APPEND include_args -I "${abs}")
  endforeach()
  set(protos)
  foreach(file IN LISTS arg_UNPARSED_ARGUMENTS)
    if(NOT file MATCHES "\\.proto$")
      message(FATAL_ERROR "annals_add_proto_library(${target}): ${file} is not a .proto file")
    endif()
    get_filename_component(abs "${file}" ABSOLUTE)
    list(APPEND protos "${abs}")
  endforeach()
  set(sources)
  foreach(abs IN LISTS protos)
    set(rel "")
    foreach(root IN LISTS roots)
      file(RELATIVE_PATH candidate "${root}" "${abs}")
      if(NOT candidate MATCHES "^\\.\\./" AND NOT IS_ABSOLUTE "${candidate}")
        set(rel "${candidate}")
        break()
      endif()
    endforeach()
    if(rel STREQUAL "")
      message(FATAL_ERROR "annals_add_proto_library(${target}): ${abs} is not under any of "
                          "IMPORT_DIRS (${arg_IMPORT_DIRS})")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    set(out_cc "${CMAKE_CURRENT_BINARY_DIR}/${stem}.pb.cc")
    set(out_h "${CMAKE_CURRENT_BINARY_DIR}/${stem}.pb.h")
    # Every file of the library as a dependency: an import that changes regenerates its users.
    add_custom_command(
      OUTPUT "${out_cc}" "${out_h}"
      COMMAND protobuf::protoc "--cpp_out=${CMAKE_CURRENT_BINARY_DIR}" ${include_args} "${abs}"
      DEPENDS ${protos} protobuf::protoc
      COMMENT "Generating C++ from ${rel}"
      VERBATIM)
    list(APPEND sources "${out_cc}" "${out_h}")
  endforeach()
  add_library(${target} STATIC ${sources})
  target_include_directories(${target} PUBLIC "${CMAKE_CURRENT_BINARY_DIR}")
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf)
endfunction()
