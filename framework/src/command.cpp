#include <annals/command.hpp>
#include <annals/trace.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <thread>

namespace annals::detail {

result<std::vector<event_data>> serialize_events(
    const std::vector<std::unique_ptr<google::protobuf::Message>>& events) {
  std::vector<event_data> out;
  out.reserve(events.size());
  for (const auto& m : events) {
    event_data e;
    e.type = m->GetDescriptor()->full_name();
    bool written = m->SerializeToString(&e.payload);
    // proto3 string fields must hold UTF-8: the serializer only logs a complaint, but parsing
    // refuses such bytes, so check that the event reads back before it is stored for good.
    std::unique_ptr<google::protobuf::Message> check(m->New());
    if (!written || !check->ParseFromString(e.payload)) {
      return error(errc::invalid_argument,
                   fmt::format("event {} cannot be stored: it does not serialize to bytes that "
                               "parse back (a string field holding invalid UTF-8?)",
                               e.type));
    }
    out.push_back(std::move(e));
  }
  return out;
}

namespace {
void pause_before_retry(const command_options& o, int attempt) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  auto cap = std::min<std::int64_t>(o.retry_backoff.count() << std::min(attempt, 16), 50000);
  if (cap <= 0) return;
  std::uniform_int_distribution<std::int64_t> d(0, cap);
  std::this_thread::sleep_for(std::chrono::microseconds(d(rng)));
}
}  // namespace

result<command_result> run_command(event_store& store, std::string_view stream_id,
                                   const command_options& o, const command_hooks& hooks) {
  if (o.max_retries < 0) return error(errc::invalid_argument, "max_retries must be >= 0");
  const std::string command_id = o.command_id.empty() ? new_uuid_v7() : o.command_id;
  event_metadata meta;
  meta.correlation_id = o.correlation_id.empty() ? command_id : o.correlation_id;
  meta.causation_id = o.causation_id.empty() ? command_id : o.causation_id;
  meta.traceparent = o.traceparent;
  meta.headers = o.headers;

  for (int attempt = 0;; ++attempt) {
    auto version = hooks.load();
    if (!version) return std::move(version).error();
    auto events = hooks.decide();
    if (!events) return std::move(events).error();
    std::size_t n = events->size();
    if (n == 0) return command_result{version.value(), 0, 0, attempt};
    for (std::size_t i = 0; i < n; ++i) {
      auto& e = events.value()[i];
      e.metadata = meta;
      if (o.event_ids) e.event_id = o.event_ids(i);
    }
    auto expected = version.value() < 0 ? expected_version::no_stream()
                                        : expected_version::exact(version.value());
    auto r = store.append(stream_id, expected, std::move(events).value());
    if (r) {
      if (!r->already_appended) hooks.appended(r->stream_version);
      return command_result{r->stream_version, r->position, n, attempt};
    }
    if (r.error().kind() != errc::concurrency_conflict) return std::move(r).error();
    if (attempt >= o.max_retries) {
      auto details = r.error().conflict().value_or(conflict_details{});
      return error(std::move(details),
                   fmt::format("{} (gave up after {} retries)", r.error().message(), attempt));
    }
    pause_before_retry(o, attempt);
  }
}

}  // namespace annals::detail

namespace annals {
command_options caused_by(const recorded_event& trigger) {
  command_options o;
  o.correlation_id =
      trigger.metadata.correlation_id.empty() ? trigger.event_id : trigger.metadata.correlation_id;
  o.causation_id = trigger.event_id;
  o.traceparent = trigger.metadata.traceparent;
  // Inside the span of the step handling the trigger (tracing on): descend from that span.
  if (valid_traceparent(o.traceparent)) {
    if (auto inner = current_traceparent(o.traceparent.substr(3, 32)); !inner.empty()) {
      o.traceparent = std::move(inner);
    }
  }
  return o;
}
}  // namespace annals
