cmake_minimum_required(VERSION 3.25)
# Runs annals-bench --quick and checks its output format (not its speed): one JSON object per
# line per scenario, each with the fields DESIGN.md names.
execute_process(COMMAND "${BENCH}" --quick --reps 1 RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "annals-bench exited ${rc}: ${err}")
endif()
string(REPLACE ";" "<semicolon>" out "${out}")  # notes contain ';', CMake's list separator
string(REPLACE "\n" ";" lines "${out}")
set(seen "")
foreach(line IN LISTS lines)
  if(line STREQUAL "")
    continue()
  endif()
  string(REPLACE "<semicolon>" ";" line "${line}")
  foreach(field scenario events seconds events_per_s baseline_per_s ratio peak_rss_mb)
    string(JSON value ERROR_VARIABLE jerr GET "${line}" ${field})
    if(jerr)
      message(FATAL_ERROR "line without '${field}': ${line}")
    endif()
  endforeach()
  string(JSON name GET "${line}" scenario)
  list(APPEND seen ${name})
endforeach()
foreach(s append_single append_batch append_concurrent command_throughput aggregate_load
          aggregate_load_full aggregate_load_snapshot replay
          rebuild live_lag)
  if(NOT s IN_LIST seen)
    message(FATAL_ERROR "scenario ${s} missing from: ${out}")
  endif()
endforeach()
