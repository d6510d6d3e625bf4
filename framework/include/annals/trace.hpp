// annals/trace.hpp — spans as structured JSON log lines, one per step, for any collector.
//
// A command that carries a W3C traceparent (command_options::traceparent, or an HTTP request's)
// stores it in its events' metadata. From there the framework reports each step that handles
// such an event as a span of the same trace: a projection applying it, a subscription (a relay,
// a process manager) delivering it. Each span is one JSON line:
//
//   {"trace_id":"4bf9...","span_id":"7e3a...","parent_span_id":"00f0...","name":
//    "projection.apply","start_us":1764870000123456,"duration_us":84,"status":"ok",
//    "attributes":{"projection":"account_balances","position":"42","type":"bank.v1.Deposited"}}
//
// Off by default. set_span_sink() turns it on for the process; so does the environment variable
// ANNALS_TRACE=stderr (read once, at the first span). Events without a traceparent make no span.
// Thread safety: the sink is called from whichever thread ends a span, concurrently: it must be
// thread-safe. set_span_sink() may be called at any time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace annals {

using span_sink = std::function<void(std::string_view json_line)>;

// Installs the sink (an empty function turns tracing off).
void set_span_sink(span_sink sink);
// Whether spans are being recorded now.
bool tracing_enabled() noexcept;

// Whether `traceparent` is a valid W3C trace context (version 00, non-zero ids, lower-case hex).
bool valid_traceparent(std::string_view traceparent) noexcept;
// A new traceparent: a child of `parent` (same trace id, new span id) when it is valid, else a
// new trace. Random ids.
std::string child_traceparent(std::string_view parent = {});

// One step of a trace. Records nothing when tracing is off or `parent` is not a valid
// traceparent. Ends (and is written) on destruction, in the thread that made it.
class span {
 public:
  span(std::string_view name, std::string_view parent);
  ~span();
  span(const span&) = delete;
  span& operator=(const span&) = delete;

  void attribute(std::string_view key, std::string_view value);
  void fail(std::string_view error);  // status "error" with this message
  bool recording() const noexcept { return recording_; }
  // This span's own traceparent (to pass on to what it causes); empty when not recording.
  const std::string& traceparent() const noexcept { return traceparent_; }

 private:
  bool recording_ = false;
  std::string name_, traceparent_, parent_span_, error_;
  std::vector<std::pair<std::string, std::string>> attributes_;
  std::int64_t start_us_ = 0;
  std::chrono::steady_clock::time_point started_;
  span* outer_ = nullptr;  // the thread's enclosing span
  friend std::string current_traceparent(std::string_view trace_id);
};

// The traceparent of the innermost span of this thread in the trace `trace_id` (32 hex), or ""
// when there is none. caused_by() uses it, so that commands a process manager issues while
// handling an event descend from the span of that step.
std::string current_traceparent(std::string_view trace_id);

}  // namespace annals
