// Stored events to JSON from stored descriptors (annals/json.hpp).
#include <annals/json.hpp>

#include "schema/descriptor_pool.hpp"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <utility>

namespace annals {

namespace pb = google::protobuf;

namespace {
// One stored schema made usable: its own pool (versions of one type define the same file
// names, so they cannot share a pool) and a message factory.
struct loaded_schema {
  explicit loaded_schema(const pb::FileDescriptorSet& set) : files(set) {}
  schema_detail::set_pool files;
  std::unique_ptr<pb::DynamicMessageFactory> factory;
  const pb::Descriptor* type = nullptr;
  std::string error;  // set when the descriptor set is unusable
};
}  // namespace

struct payload_decoder::impl {
  std::vector<stored_schema> schemas;
  std::map<std::pair<std::string, std::int32_t>, std::unique_ptr<loaded_schema>, std::less<>>
      loaded;

  loaded_schema& load(const stored_schema& s) {
    auto key = std::make_pair(s.type, s.version);
    if (auto it = loaded.find(key); it != loaded.end()) return *it->second;
    pb::FileDescriptorSet set;
    bool parsed = set.ParseFromString(s.descriptor_set);
    auto l = std::make_unique<loaded_schema>(set);
    if (!parsed) {
      l->error = fmt::format("the stored descriptor set of {} version {} does not parse", s.type,
                             s.version);
    } else if (l->type = l->files.pool().FindMessageTypeByName(s.type); !l->type) {
      l->error = fmt::format("the stored descriptor set of {} version {} does not define the "
                             "type ({})",
                             s.type, s.version,
                             l->files.errors().empty() ? "not found" : l->files.errors());
    } else {
      l->factory = std::make_unique<pb::DynamicMessageFactory>(&l->files.pool());
    }
    return *loaded.emplace(std::move(key), std::move(l)).first->second;
  }

  // A parsed message of `type` (empty: s.type) as `s`'s descriptor set defines it, or an error.
  result<std::unique_ptr<pb::Message>> parse(const stored_schema& s, std::string_view payload,
                                             std::string_view type = {}) {
    loaded_schema& l = load(s);
    if (!l.error.empty()) return error(errc::invalid_argument, l.error);
    const pb::Descriptor* d = l.type;
    if (!type.empty() && type != s.type) {
      d = l.files.pool().FindMessageTypeByName(std::string(type));
      if (!d) {
        return error(errc::invalid_argument,
                     fmt::format("the stored descriptor set of {} version {} does not define {}",
                                 s.type, s.version, type));
      }
    } else {
      type = s.type;
    }
    std::unique_ptr<pb::Message> m(l.factory->GetPrototype(d)->New());
    if (!m->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      return error(errc::corruption,
                   type == s.type
                       ? fmt::format("payload does not parse as {} (schema version {})", type,
                                     s.version)
                       : fmt::format("payload does not parse as {} (as defined in the stored "
                                     "schema of {} version {})",
                                     type, s.type, s.version));
    }
    return m;
  }

  // find_defining(): the answers so far, by type (nullptr: none defines it).
  std::map<std::string, const stored_schema*, std::less<>> defining;
};

payload_decoder::payload_decoder(std::vector<stored_schema> schemas)
    : impl_(std::make_unique<impl>()) {
  impl_->schemas = std::move(schemas);
}
payload_decoder::~payload_decoder() = default;
payload_decoder::payload_decoder(payload_decoder&&) noexcept = default;
payload_decoder& payload_decoder::operator=(payload_decoder&&) noexcept = default;

result<payload_decoder> payload_decoder::from_store(event_store& store) {
  auto s = store.read_schemas();
  if (!s) {
    if (s.error().kind() == errc::invalid_argument) return payload_decoder{};
    return std::move(s).error();
  }
  return payload_decoder(std::move(s).value());
}

const std::vector<stored_schema>& payload_decoder::schemas() const noexcept {
  return impl_->schemas;
}

const stored_schema* payload_decoder::find(std::string_view type,
                                           std::int32_t version) const noexcept {
  for (const auto& s : impl_->schemas) {
    if (s.type == type && s.version == version) return &s;
  }
  return nullptr;
}

const stored_schema* payload_decoder::pick(std::string_view type,
                                           std::int32_t version) const noexcept {
  const stored_schema* latest = nullptr;
  for (const auto& s : impl_->schemas) {
    if (s.type != type) continue;
    if (s.version == version) return &s;
    if (!latest || s.version > latest->version) latest = &s;
  }
  return latest;
}

const stored_schema* payload_decoder::find_defining(std::string_view type) {
  if (auto it = impl_->defining.find(type); it != impl_->defining.end()) return it->second;
  std::vector<const stored_schema*> newest_first;
  for (const auto& s : impl_->schemas) newest_first.push_back(&s);
  std::stable_sort(newest_first.begin(), newest_first.end(), [](auto* a, auto* b) {
    return a->registered_at_us != b->registered_at_us ? a->registered_at_us > b->registered_at_us
                                                       : a->version > b->version;
  });
  const stored_schema* found = nullptr;
  const std::string name(type);
  for (const stored_schema* s : newest_first) {
    loaded_schema& l = impl_->load(*s);
    if (l.error.empty() && l.files.pool().FindMessageTypeByName(name)) {
      found = s;
      break;
    }
  }
  impl_->defining.emplace(name, found);
  return found;
}

result<std::string> payload_decoder::to_json(std::string_view type, std::int32_t version,
                                             std::string_view payload) {
  const stored_schema* s = pick(type, version);
  if (!s) s = find_defining(type);
  if (!s) {
    return error(errc::not_found, fmt::format("the store has no schema for event type '{}'", type));
  }
  auto m = impl_->parse(*s, payload, type);
  if (!m) return std::move(m).error();
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  auto status = pb::util::MessageToJsonString(**m, &out, options);
  if (!status.ok()) {
    return error(errc::corruption, fmt::format("payload of type {} cannot be written as JSON: {}",
                                               type, status.ToString()));
  }
  return out;
}

result<std::string> payload_decoder::to_json(const recorded_event& event) {
  return to_json(event.type, event.metadata.schema_version, event.payload);
}

result<void> payload_decoder::check(const stored_schema& schema, std::string_view payload,
                                    std::string_view type) {
  auto m = impl_->parse(schema, payload, type);
  if (!m) return std::move(m).error();
  return {};
}

result<std::string> payload_decoder::describe(const stored_schema& schema) {
  const loaded_schema& l = impl_->load(schema);
  if (!l.error.empty()) return error(errc::invalid_argument, l.error);
  return l.type->file()->DebugString();
}

std::string json_quote(std::string_view s) {
  const bool utf8 = is_valid_utf8(s);
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04x}", c);
        } else if (c >= 0x80 && !utf8) {
          out += "\\ufffd";
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

std::string iso8601_utc(std::int64_t us) {
  std::int64_t secs = us / 1000000, frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    --secs;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) return fmt::format("{}us", us);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

}  // namespace annals
