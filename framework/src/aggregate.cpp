#include <annals/aggregate.hpp>

#include <fmt/format.h>
#include <google/protobuf/stubs/logging.h>

#include <mutex>

namespace annals::detail {

result<std::int64_t> fold_stream(event_store& store, std::string_view stream_id,
                                 std::int64_t from_version, const fold_step& step) {
  std::optional<error> failed;
  std::int64_t last = from_version - 1;
  read_stream_options o;
  o.from_version = from_version;
  auto r = store.read_stream(stream_id, o, [&](const recorded_event& e) {
    if (e.stream_version != last + 1) {
      failed = error(errc::corruption,
                     fmt::format("stream '{}' skips from version {} to {}", stream_id, last,
                                 e.stream_version));
      return false;
    }
    if (auto s = step(e); !s) {
      failed = s.error();
      return false;
    }
    last = e.stream_version;
    return true;
  });
  if (!r) return std::move(r).error();
  if (failed) return std::move(*failed);
  return last;
}

error unknown_event_type(const recorded_event& e, std::string_view aggregate) {
  return error(errc::corruption,
               fmt::format("stream '{}' holds an event of type '{}' at version {}, which {} does "
                           "not list in its event_list; add the type and its apply(), or an "
                           "upcaster",
                           e.stream_id, e.type, e.stream_version, aggregate));
}

namespace {
// libprotobuf logs "[libprotobuf ERROR ...] String field ... contains invalid UTF-8 data" on
// stderr while it parses such bytes, before the parse returns false, which the callers turn
// into a clear error of their own. A log handler, installed once in front of whatever handler
// was there, drops what libprotobuf says while this thread is inside parse_payload and passes
// everything else on. A thread-local flag costs nothing on the fold's hot path (a LogSilencer
// would take a process-wide mutex twice per event).
thread_local bool parsing = false;
google::protobuf::LogHandler* previous_handler = nullptr;

void quiet_while_parsing(google::protobuf::LogLevel level, const char* file, int line,
                         const std::string& message) {
  if (parsing || previous_handler == nullptr) return;
  previous_handler(level, file, line, message);
}

struct parsing_scope {
  parsing_scope() noexcept { parsing = true; }
  ~parsing_scope() { parsing = false; }
};
}  // namespace

bool parse_payload(google::protobuf::MessageLite& message, std::string_view bytes) {
  static std::once_flag installed;
  std::call_once(installed,
                 [] { previous_handler = google::protobuf::SetLogHandler(&quiet_while_parsing); });
  parsing_scope scope;
  return message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

error undecodable_event(const recorded_event& e) {
  return error(errc::corruption,
               fmt::format("event at position {} (stream '{}', version {}) does not decode as {}",
                           e.position, e.stream_id, e.stream_version, e.type));
}

}  // namespace annals::detail
