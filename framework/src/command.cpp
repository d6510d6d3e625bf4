#include <annals/command.hpp>
#include <annals/trace.hpp>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <random>
#include <thread>

namespace annals::detail {

namespace {
namespace pb = google::protobuf;

// The path ("name", "name.given", "lines[2]") of a proto3 string field of `m`, or of a message
// in it, that holds invalid UTF-8; empty when there is none. Checked before serializing, since
// the serializer would log raw "[libprotobuf ERROR ...]" lines about it on stderr.
std::string invalid_utf8_field(const pb::Message& m) {
  const pb::Reflection* r = m.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  std::string scratch;
  for (const pb::FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      std::string inner;
      if (f->type() == pb::FieldDescriptor::TYPE_STRING &&
          f->file()->syntax() == pb::FileDescriptor::SYNTAX_PROTO3) {
        const std::string& v = f->is_repeated() ? r->GetRepeatedStringReference(m, f, i, &scratch)
                                                : r->GetStringReference(m, f, &scratch);
        if (is_valid_utf8(v)) continue;
      } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        inner = invalid_utf8_field(f->is_repeated() ? r->GetRepeatedMessage(m, f, i)
                                                    : r->GetMessage(m, f));
        if (inner.empty()) continue;
      } else {
        break;  // neither strings nor messages
      }
      return fmt::format("{}{}{}{}", f->name(), f->is_repeated() ? fmt::format("[{}]", i) : "",
                         inner.empty() ? "" : ".", inner);
    }
  }
  return {};
}
}  // namespace

result<std::vector<event_data>> serialize_events(
    const std::vector<std::unique_ptr<google::protobuf::Message>>& events) {
  std::vector<event_data> out;
  out.reserve(events.size());
  for (const auto& m : events) {
    event_data e;
    e.type = m->GetDescriptor()->full_name();
    // proto3 string fields must hold UTF-8: the serializer only logs a complaint, but parsing
    // refuses such bytes. Name the field, before the serializer logs anything.
    if (auto field = invalid_utf8_field(*m); !field.empty()) {
      return error(errc::invalid_argument,
                   fmt::format("event {} cannot be stored: its string field '{}' is not valid "
                               "UTF-8",
                               e.type, field));
    }
    bool written = m->SerializeToString(&e.payload);
    // And check that the event reads back before it is stored for good.
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
