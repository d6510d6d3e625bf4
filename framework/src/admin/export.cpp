// `annals export` / `annals import` (annals/admin.hpp): JSON lines of annals.v1.ExportLine,
// written and parsed by protobuf's JSON mapping. Backend-neutral: rows come from store_admin.
#include <annals/admin.hpp>
#include <annals/json.hpp>
#include <annals/schema.hpp>

#include "admin/checks.hpp"
#include "annals/v1/envelope.pb.h"
#include "schema/descriptor_pool.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <google/protobuf/util/type_resolver_util.h>

#include <istream>
#include <ostream>
#include <set>

namespace annals {
namespace {

namespace pb = google::protobuf;
constexpr std::string_view export_format = "annals-export";
constexpr int export_format_version = 1;
constexpr std::size_t max_reported_lines = 100;

// One message as one line of JSON, field names as in the .proto. Serialized deterministically
// first, so map entries (a payload's google.protobuf.Struct) come out in key order and the same
// store always exports to the same bytes.
result<std::string> json_line(const pb::Message& m) {
  static const std::unique_ptr<pb::util::TypeResolver> resolver(
      pb::util::NewTypeResolverForDescriptorPool("type.googleapis.com",
                                                 pb::DescriptorPool::generated_pool()));
  std::string binary;
  {
    pb::io::StringOutputStream raw(&binary);
    pb::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status = pb::util::BinaryToJsonString(
      resolver.get(), "type.googleapis.com/" + m.GetDescriptor()->full_name(), binary, &json,
      options);
  if (!status.ok()) {
    return error(errc::invalid_argument,
                 fmt::format("cannot write {} as JSON: {}", m.GetDescriptor()->full_name(),
                             status.ToString()));
  }
  return json;
}

result<void> write_line(const v1::ExportLine& line, std::ostream& out) {
  auto text = json_line(line);
  if (!text) return text.error();
  std::string& json = *text;
  json += '\n';
  if (!out.write(json.data(), static_cast<std::streamsize>(json.size()))) {
    return error(errc::io, "cannot write the export (output failed)");
  }
  return {};
}

// The readable parts common to export and `annals read --json`: time, payload as JSON.
void set_readable(std::string_view type, std::int32_t schema_version, std::string_view payload,
                  std::int64_t recorded_at_us, payload_decoder& decoder, v1::ExportedEvent& out) {
  // Timestamp's range (years 1 to 9999); a tampered time outside it stays only in recorded_at_us.
  constexpr std::int64_t min_us = -62135596800LL * 1000000, max_us = 253402300799LL * 1000000;
  if (recorded_at_us >= min_us && recorded_at_us <= max_us) {
    *out.mutable_recorded_at() = pb::util::TimeUtil::MicrosecondsToTimestamp(recorded_at_us);
  }
  auto json = decoder.to_json(type, schema_version, payload);
  if (!json) {
    out.set_payload_error(json.error().message());
    return;
  }
  auto status = pb::util::JsonStringToMessage(*json, out.mutable_payload_json());
  if (!status.ok()) out.set_payload_error(status.ToString());
}

// Why a stored schema from an import line is unusable, or empty: its descriptor set must
// parse, build and define its type, and the fingerprint must be the type's (a damaged line
// would otherwise leave every payload of the type undecodable, found only by verify).
std::string schema_problem(const stored_schema& s) {
  pb::FileDescriptorSet set;
  if (!set.ParseFromString(s.descriptor_set)) return "its descriptor set does not parse";
  schema_detail::set_pool pool(set);
  const pb::Descriptor* type = pool.pool().FindMessageTypeByName(s.type);
  if (!type) {
    return fmt::format("its descriptor set does not define {}{}", s.type,
                       pool.errors().empty() ? "" : " (" + pool.errors() + ")");
  }
  if (type_fingerprint(*type) != s.fingerprint)
    return fmt::format("its fingerprint is not that of {} in its descriptor set", s.type);
  return {};
}

}  // namespace

std::string event_json(const recorded_event& e, payload_decoder& decoder) {
  v1::ExportedEvent x;
  x.set_position(e.position);
  x.set_stream_id(e.stream_id);
  x.set_stream_version(e.stream_version);
  x.set_event_id(e.event_id);
  x.set_type(e.type);
  x.set_recorded_at_us(e.recorded_at_us);
  (void)x.mutable_metadata()->ParseFromString(store::encode_metadata(e.metadata));
  set_readable(e.type, e.metadata.schema_version, e.payload, e.recorded_at_us, decoder, x);
  auto json = json_line(x);
  return json ? std::move(json).value() : std::string("{}");
}

result<std::int64_t> export_store(store_admin& admin, std::ostream& out) {
  payload_decoder decoder;
  std::int64_t written = 0;
  dump_visitor visit;
  visit.begin = [&](const std::vector<stored_schema>& schemas,
                    std::int64_t events) -> result<void> {
    v1::ExportLine line;
    auto* h = line.mutable_header();
    h->set_format(std::string(export_format));
    h->set_format_version(export_format_version);
    h->set_events(events);
    h->set_schemas(static_cast<std::int64_t>(schemas.size()));
    if (auto r = write_line(line, out); !r) return r;
    for (const auto& s : schemas) {
      auto* x = line.mutable_schema();
      x->set_type(s.type);
      x->set_version(s.version);
      x->set_compatibility(std::string(to_string(s.mode)));
      x->set_fingerprint(s.fingerprint);
      x->set_descriptor_set(s.descriptor_set);
      x->set_registered_at_us(s.registered_at_us);
      if (auto r = write_line(line, out); !r) return r;
    }
    decoder = payload_decoder(schemas);
    return {};
  };
  visit.event = [&](const raw_event& e) -> result<void> {
    if (e.event_id.size() != 16) {
      return error(errc::corruption,
                   fmt::format("the event at position {} has a malformed event id (run annals verify)",
                               e.position));
    }
    v1::ExportLine line;
    auto* x = line.mutable_event();
    event_metadata meta;
    if (!admin_detail::well_formed_metadata(e.metadata.value_or(std::string()), meta) ||
        !x->mutable_metadata()->ParseFromString(e.metadata.value_or(std::string()))) {
      return error(errc::corruption,
                   fmt::format("the event at position {} has undecodable metadata (run annals verify)",
                               e.position));
    }
    x->set_position(e.position);
    x->set_stream_id(e.stream_id);
    x->set_stream_version(e.stream_version);
    x->set_event_id(store::format_uuid(reinterpret_cast<const unsigned char*>(e.event_id.data())));
    x->set_type(e.type);
    x->set_recorded_at_us(e.recorded_at_us);
    if (e.metadata) x->set_metadata_bytes(*e.metadata);
    x->set_payload(e.payload);
    set_readable(e.type, x->metadata().schema_version(), e.payload, e.recorded_at_us, decoder, *x);
    if (auto r = write_line(line, out); !r) return r;
    ++written;
    return {};
  };
  if (auto r = admin.dump(visit); !r) return r.error();
  out.flush();
  if (!out) return error(errc::io, "cannot write the export (output failed)");
  return written;
}

result<std::int64_t> import_store(store_admin& admin, std::istream& in) {
  auto session = admin.begin_import();
  if (!session) return std::move(session).error();
  std::vector<std::string> problems;
  std::size_t more = 0;
  auto bad = [&](std::int64_t line_no, std::string_view why) {
    if (problems.size() < max_reported_lines) {
      problems.push_back(fmt::format("line {}: {}", line_no, why));
    } else {
      ++more;
    }
  };
  std::string text;
  std::int64_t line_no = 0, events = 0, schemas = 0;
  bool header_seen = false;
  std::set<std::pair<std::string, std::int32_t>> imported;  // schemas: type, version
  v1::ExportHeader header;
  v1::ExportLine line;
  while (std::getline(in, text)) {
    ++line_no;
    line.Clear();
    auto status = pb::util::JsonStringToMessage(text, &line);
    if (!status.ok()) {
      bad(line_no, fmt::format("not an export line ({})",
                               std::string(status.message().data(), status.message().size())));
      continue;
    }
    if (!header_seen) {
      if (line.item_case() != v1::ExportLine::kHeader || line.header().format() != export_format) {
        bad(line_no,
            "the first line must be the export header ({\"header\": {\"format\": "
            "\"annals-export\", ...}})");
        break;  // not an export at all: the other lines would only repeat it
      }
      if (line.header().format_version() != export_format_version) {
        bad(line_no, fmt::format("export format version {} is not supported (this Annals "
                                 "reads {})",
                                 line.header().format_version(), export_format_version));
        break;
      }
      header = line.header();
      header_seen = true;
      continue;
    }
    switch (line.item_case()) {
      case v1::ExportLine::kSchema: {
        const auto& s = line.schema();
        if (events > 0) {
          bad(line_no, "a schema line after the first event line");
          break;
        }
        auto mode = parse_compatibility(s.compatibility());
        if (!mode) {
          bad(line_no, fmt::format("unknown compatibility '{}'", s.compatibility()));
          break;
        }
        ++schemas;
        stored_schema x{s.type(),        s.version(),        *mode,
                        s.fingerprint(), s.descriptor_set(), s.registered_at_us()};
        if (auto why = schema_problem(x); !why.empty()) {
          bad(line_no, fmt::format("schema {} version {}: {}", s.type(), s.version(), why));
        } else if (auto r = (*session)->add_schema(x); !r) {
          bad(line_no, r.error().message());
        } else {
          imported.emplace(s.type(), s.version());
        }
        break;
      }
      case v1::ExportLine::kEvent: {
        const auto& e = line.event();
        ++events;
        if (e.position() < 1 || e.position() >= admin_detail::max_import_position) {
          bad(line_no, fmt::format("position {} is not between 1 and 2^62 - 1", e.position()));
          break;  // not added: the lines after it are still checked against the one before
        }
        auto id = store::parse_uuid(e.event_id());
        if (!id) {
          bad(line_no, fmt::format("event id '{}' is not a UUID", e.event_id()));
          break;
        }
        // Checked, then added anyway (nothing is committed after a bad line), so that the
        // lines after it are not reported for versions or positions that only follow from it.
        event_metadata meta;
        if (e.has_metadata_bytes() && !admin_detail::well_formed_metadata(e.metadata_bytes(), meta)) {
          bad(line_no, "metadata_bytes is not a well-formed annals.v1.EventMetadata");
        } else if (meta.schema_version != 0 && !imported.count({e.type(), meta.schema_version})) {
          bad(line_no, fmt::format("the event says schema version {} of {}, which the input "
                                   "does not have",
                                   meta.schema_version, e.type()));
        }
        raw_event x;
        x.position = e.position();
        x.stream_id = e.stream_id();
        x.stream_version = e.stream_version();
        x.event_id.assign(reinterpret_cast<const char*>(id->data()), id->size());
        x.type = e.type();
        x.recorded_at_us = e.recorded_at_us();
        if (e.has_metadata_bytes()) x.metadata = e.metadata_bytes();
        x.payload = e.payload();
        if (auto r = (*session)->add_event(x); !r) bad(line_no, r.error().message());
        break;
      }
      case v1::ExportLine::kHeader:
        bad(line_no, "a second header line");
        break;
      default:
        bad(line_no, "an empty line object (expected header, schema or event)");
        break;
    }
  }
  if (in.bad()) return error(errc::io, "cannot read the import input");
  if (line_no == 0) problems.push_back("the input is empty (expected an export header)");
  if (header_seen && (header.events() != events || header.schemas() != schemas)) {
    problems.push_back(
        fmt::format("the header announces {} events and {} schemas but the input "
                    "has {} and {} (truncated?)",
                    header.events(), header.schemas(), events, schemas));
  }
  if (!problems.empty()) {
    std::string message =
        fmt::format("import refused, nothing was written:\n{}", fmt::join(problems, "\n"));
    if (more) message += fmt::format("\n... and {} more", more);
    return error(errc::invalid_argument, std::move(message));
  }
  if (auto r = (*session)->commit(); !r) return r.error();
  return events;
}

}  // namespace annals
