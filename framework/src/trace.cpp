// Spans as JSON lines (annals/trace.hpp).
#include <annals/trace.hpp>

#include <annals/event_store.hpp>
#include <annals/json.hpp>

#include "store/prepared.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>

namespace annals {
namespace {

std::mutex sink_mu;
std::shared_ptr<const span_sink> current_sink;  // guarded by sink_mu
std::atomic<bool> enabled{false};
std::once_flag env_once;
// The innermost recording span of this thread (what a command issued inside it descends from).
thread_local span* current_span = nullptr;

void read_environment() {
  std::call_once(env_once, [] {
    const char* v = std::getenv("ANNALS_TRACE");
    if (!v || std::string_view(v) != "stderr") return;
    std::lock_guard lock(sink_mu);
    if (current_sink) return;  // set by the application first
    current_sink = std::make_shared<const span_sink>([](std::string_view line) {
      static std::mutex out_mu;  // whole lines, never interleaved
      std::lock_guard l(out_mu);
      std::fwrite(line.data(), 1, line.size(), stderr);
      std::fputc('\n', stderr);
    });
    enabled = true;
  });
}

bool lower_hex(std::string_view s) noexcept {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string random_hex(std::size_t bytes) {
  thread_local std::mt19937_64 rng{std::random_device{}() ^
                                   static_cast<std::uint64_t>(store::system_clock_us())};
  std::string out;
  while (out.size() < bytes * 2) {
    std::uint64_t v = rng();
    if (v == 0) continue;
    out += fmt::format("{:016x}", v);
  }
  out.resize(bytes * 2);
  return out;
}

void escape_into(std::string& out, std::string_view s) { out += json_quote(s); }

}  // namespace

void set_span_sink(span_sink sink) {
  read_environment();  // so that a later first span does not override the application's sink
  std::lock_guard lock(sink_mu);
  enabled = static_cast<bool>(sink);
  current_sink = sink ? std::make_shared<const span_sink>(std::move(sink)) : nullptr;
}

bool tracing_enabled() noexcept {
  read_environment();
  return enabled.load(std::memory_order_relaxed);
}

bool valid_traceparent(std::string_view t) noexcept {
  // 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
  if (t.size() != 55 || t.substr(0, 3) != "00-" || t[35] != '-' || t[52] != '-') return false;
  auto trace = t.substr(3, 32), span = t.substr(36, 16), flags = t.substr(53, 2);
  if (!lower_hex(trace) || !lower_hex(span) || !lower_hex(flags)) return false;
  return trace != std::string(32, '0') && span != std::string(16, '0');
}

std::string child_traceparent(std::string_view parent) {
  if (valid_traceparent(parent)) {
    return fmt::format("00-{}-{}-{}", parent.substr(3, 32), random_hex(8), parent.substr(53, 2));
  }
  return fmt::format("00-{}-{}-01", random_hex(16), random_hex(8));
}

span::span(std::string_view name, std::string_view parent) {
  if (!tracing_enabled() || !valid_traceparent(parent)) return;
  recording_ = true;
  name_ = name;
  parent_span_ = parent.substr(36, 16);
  traceparent_ = child_traceparent(parent);
  start_us_ = store::system_clock_us();
  started_ = std::chrono::steady_clock::now();
  outer_ = current_span;
  current_span = this;
}

void span::attribute(std::string_view key, std::string_view value) {
  if (recording_) attributes_.emplace_back(key, value);
}

void span::fail(std::string_view error) {
  if (recording_) error_ = error.empty() ? "error" : error;
}

std::string current_traceparent(std::string_view trace_id) {
  for (const span* s = current_span; s; s = s->outer_) {
    if (std::string_view(s->traceparent_).substr(3, 32) == trace_id) return s->traceparent_;
  }
  return {};
}

span::~span() {
  if (!recording_) return;
  // Unlink from the thread's chain, wherever this span is in it (spans destroyed out of order,
  // as a vector's elements are, must not leave a dangling link).
  if (current_span == this) {
    current_span = outer_;
  } else {
    for (span* s = current_span; s; s = s->outer_) {
      if (s->outer_ == this) {
        s->outer_ = outer_;
        break;
      }
    }
  }
  std::shared_ptr<const span_sink> sink;
  {
    std::lock_guard lock(sink_mu);
    sink = current_sink;
  }
  if (!sink) return;
  const auto duration = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::steady_clock::now() - started_)
                            .count();
  std::string line = fmt::format(R"({{"trace_id":"{}","span_id":"{}","parent_span_id":"{}","name":)",
                                 traceparent_.substr(3, 32), traceparent_.substr(36, 16),
                                 parent_span_);
  escape_into(line, name_);
  line += fmt::format(R"(,"start_us":{},"duration_us":{},"status":)", start_us_, duration);
  escape_into(line, error_.empty() ? "ok" : "error");
  if (!error_.empty()) {
    line += ",\"error\":";
    escape_into(line, error_);
  }
  line += ",\"attributes\":{";
  for (std::size_t i = 0; i < attributes_.size(); ++i) {
    if (i) line += ',';
    escape_into(line, attributes_[i].first);
    line += ':';
    escape_into(line, attributes_[i].second);
  }
  line += "}}";
  try {
    (*sink)(line);
  } catch (...) {
    // A failing sink must not take the step down with it.
  }
}

}  // namespace annals
