// The `annals` tool's commands (commands.hpp). Store access goes through annals/admin.hpp and
// the event_store contract, so another backend only needs its own store_admin.
#include "commands.hpp"

#include <annals/admin.hpp>
#include <annals/append_watch.hpp>
#include <annals/json.hpp>
#include <annals/schema.hpp>

#include <fmt/format.h>
#include <fmt/ostream.h>
#include <google/protobuf/descriptor.pb.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

namespace annals::tool {
namespace {

int fail(const context& c, const error& e) {
  fmt::print(c.err, "annals: {}\n", e.message());
  return exit_code(e.kind());
}

// Opens the store; a missing store file is a storage error (4) here, not "not found".
result<std::unique_ptr<store_admin>> open(const context& c, bool writable = false) {
  auto a = open_admin(c.db, writable);
  if (!a && a.error().kind() == errc::not_found) return error(errc::io, a.error().message());
  return a;
}

std::string iso_time(std::int64_t us) { return iso8601_utc(us); }

// Prints one event: as a JSON line, or as a few indented lines for people.
void print_event(const context& c, const recorded_event& e, payload_decoder& decoder, bool json) {
  if (json) {
    fmt::print(c.out, "{}\n", event_json(e, decoder));
    return;
  }
  fmt::print(c.out, "#{} {}@{} {} {}\n", e.position, e.stream_id, e.stream_version, e.type,
             iso_time(e.recorded_at_us));
  std::string line =
      fmt::format("  id={} schema={}", e.event_id,
                  e.metadata.schema_version ? std::to_string(e.metadata.schema_version)
                                            : std::string("unknown"));
  for (auto [name, value] :
       {std::pair<const char*, const std::string*>{"correlation", &e.metadata.correlation_id},
        {"causation", &e.metadata.causation_id},
        {"traceparent", &e.metadata.traceparent}}) {
    if (!value->empty()) line += fmt::format(" {}={}", name, *value);
  }
  fmt::print(c.out, "{}\n", line);
  for (const auto& h : e.metadata.headers) fmt::print(c.out, "  header {}={}\n", h.key, h.value);
  auto payload = decoder.to_json(e);
  if (payload) {
    fmt::print(c.out, "  {}\n", *payload);
  } else {
    fmt::print(c.out, "  ({} payload bytes not decoded: {})\n", e.payload.size(),
               payload.error().message());
  }
}

// A decoder that re-reads the store's schemas once when it meets a type or version it lacks
// (a follower sees types registered after it started).
class live_decoder {
 public:
  explicit live_decoder(event_store& s) : store_(s) {}
  result<void> load() {
    auto d = payload_decoder::from_store(store_);
    if (!d) return d.error();
    decoder_ = std::move(d).value();
    return {};
  }
  // Re-reads once per (type, version) it lacks, not per event: a type that was never
  // registered (decoded, if at all, from another type's stored file) would else cost a read
  // of every schema for each of its events.
  payload_decoder& for_event(const recorded_event& e) {
    const std::int32_t v = e.metadata.schema_version;
    if ((v != 0 ? !decoder_.find(e.type, v) : !decoder_.pick(e.type, 0)) &&
        reloaded_.emplace(e.type, v).second) {
      (void)load();
    }
    return decoder_;
  }

 private:
  event_store& store_;
  payload_decoder decoder_;
  std::set<std::pair<std::string, std::int32_t>> reloaded_;
};

}  // namespace

int streams(const context& c, const streams_options& o) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  auto r = (*a)->list_streams(o.prefix, o.limit, [&](const stream_info& s) {
    fmt::print(c.out, "{}\tversion {}\t{} events\n", s.stream_id, s.version, s.event_count);
    return true;
  });
  if (!r) return fail(c, r.error());
  return 0;
}

int read(const context& c, const read_options& o) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  event_store& store = (*a)->store();
  auto version = store.stream_version(o.stream);
  if (!version) return fail(c, version.error());
  if (*version < 0)
    return fail(c, error(errc::not_found, fmt::format("stream '{}' not found", o.stream)));
  live_decoder decoder(store);
  if (auto l = decoder.load(); !l) return fail(c, l.error());
  read_stream_options ro;
  ro.from_version = o.from;
  ro.dir = o.backward ? direction::backward : direction::forward;
  if (o.limit >= 0) ro.max_count = o.limit;
  auto r = store.read_stream(o.stream, ro, [&](const recorded_event& e) {
    print_event(c, e, decoder.for_event(e), o.json);
    return true;
  });
  if (!r) return fail(c, r.error());
  return 0;
}

int tail(const context& c, const tail_options& o, const std::atomic<bool>& stop) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  event_store& store = (*a)->store();
  live_decoder decoder(store);
  if (auto l = decoder.load(); !l) return fail(c, l.error());
  read_all_options ro;
  ro.from_position = o.from;
  ro.event_types = o.types;
  ro.stream_prefix = o.prefix;
  // Following: woken by appends (PostgreSQL: LISTEN/NOTIFY; SQLite: polled every 50 ms).
  std::unique_ptr<append_watch> watch;
  if (o.follow) {
    auto w = append_watch::open(c.db);
    if (!w) return fail(c, w.error());
    watch = std::move(w).value();
  }
  std::int64_t left = o.limit < 0 ? INT64_MAX : o.limit;
  while (left > 0 && !stop.load()) {
    const auto mark = watch ? watch->mark() : 0;
    ro.max_count = left;
    std::int64_t seen = 0;
    auto r = store.read_all(ro, [&](const recorded_event& e) {
      print_event(c, e, decoder.for_event(e), o.json);
      ro.from_position = e.position + 1;
      ++seen;
      return !stop.load();
    });
    if (!r) return fail(c, r.error());
    left -= seen;
    c.out.flush();
    if (!o.follow) break;
    // A signal (SIGINT, SIGTERM) is noticed within 250 ms.
    if (seen == 0) watch->wait(mark, std::chrono::milliseconds(250));
  }
  return 0;
}

int stats(const context& c) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  auto s = (*a)->stats(10);
  if (!s) return fail(c, s.error());
  fmt::print(c.out,
             "storage format   {}\nevents           {}\nstreams          {}\nhead position    {}\n"
             "file bytes       {}\npayload bytes    {}\nmetadata bytes   {}\n"
             "schemas          {}\nsnapshots        {}\n",
             s->format_version, s->events, s->streams, s->head_position, s->file_bytes,
             s->payload_bytes, s->metadata_bytes, s->schemas, s->snapshots);
  if (!s->largest_streams.empty()) {
    fmt::print(c.out, "largest streams:\n");
    for (const auto& x : s->largest_streams) {
      fmt::print(c.out, "  {}\t{} events\tversion {}\n", x.stream_id, x.event_count, x.version);
    }
  }
  if (!s->types.empty()) {
    fmt::print(c.out, "event types:\n");
    for (const auto& t : s->types) {
      fmt::print(c.out, "  {}\t{} events\t{} payload bytes\n", t.type, t.events, t.payload_bytes);
    }
  }
  if (!s->projections.empty()) {
    fmt::print(c.out, "projections:\n");
    for (const auto& p : s->projections) {
      fmt::print(c.out, "  {}\tversion {}\tcheckpoint {}\tlag {}\tparked {}{}\n", p.name, p.version,
                 p.checkpoint, p.lag_events, p.parked,
                 p.stuck_position ? fmt::format("\tstuck at {}: {}", *p.stuck_position, p.error)
                                  : std::string());
    }
  }
  return 0;
}

int verify(const context& c) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  std::int64_t warnings = 0;
  auto n = (*a)->verify([&](const store_problem& p) {
    std::string where = p.position > 0 ? fmt::format("position {}", p.position) : "store";
    if (p.warning) ++warnings;
    fmt::print(c.out, "{}: {}{}: {}\n", where, p.warning ? "warning: " : "", p.check, p.detail);
  });
  if (!n) return fail(c, n.error());
  std::string counted =
      warnings ? fmt::format(", {} warning{}", warnings, warnings == 1 ? "" : "s") : "";
  if (*n == 0) {
    fmt::print(c.out, "ok: no problems found{}\n", counted);
    return 0;
  }
  fmt::print(c.out, "{} problem{} found{}\n", *n, *n == 1 ? "" : "s", counted);
  return 1;
}

int export_events(const context& c, const std::string& output) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  if (output == "-") {
    auto n = export_store(**a, c.out);
    if (!n) return fail(c, n.error());
    return 0;
  }
  std::ofstream file(output, std::ios::binary | std::ios::trunc);
  if (!file) {
    return fail(c, error(errc::io, fmt::format("cannot write '{}': {}", output,
                                               std::strerror(errno))));
  }
  auto n = export_store(**a, file);
  file.close();
  if (!n || !file) {
    // No partial export left behind, but only a file is removed: never a device or a pipe
    // (`--output /dev/full` must not delete /dev/full).
    struct stat st {};
    if (::stat(output.c_str(), &st) == 0 && S_ISREG(st.st_mode)) std::remove(output.c_str());
    return fail(c, n ? error(errc::io, fmt::format("cannot write '{}'", output)) : n.error());
  }
  fmt::print(c.err, "exported {} events to {}\n", *n, output);
  return 0;
}

int import_events(const context& c, const std::string& input) {
  std::ifstream file;
  if (input != "-") {
    // Checked before the store is created: a directory opens as a stream but cannot be read.
    std::error_code ec;
    if (std::filesystem::is_directory(input, ec)) {
      return fail(c, error(errc::io, fmt::format("cannot read '{}': it is a directory", input)));
    }
    file.open(input, std::ios::binary);
    if (!file) {
      return fail(c, error(errc::io, fmt::format("cannot read '{}': {}", input,
                                                 std::strerror(errno))));
    }
  }
  auto a = open(c, true);
  if (!a) return fail(c, a.error());
  auto n = import_store(**a, input == "-" ? std::cin : file);
  if (!n) return fail(c, n.error());
  fmt::print(c.err, "imported {} events\n", *n);
  return 0;
}

namespace {
bool is_postgres(std::string_view uri) {
  return uri.starts_with("postgresql://") || uri.starts_with("postgres://");
}
std::string sqlite_path(std::string_view uri) {
  return std::string(uri.starts_with("sqlite:") ? uri.substr(7) : uri);
}
}  // namespace

int migrate(const context& c, const std::string& to) {
  const auto started = std::chrono::steady_clock::now();
  auto from = open(c);  // first: a missing source creates nothing
  if (!from) return fail(c, from.error());
  // A new SQLite file that the copy does not fill is removed again; an existing store, or a
  // PostgreSQL database (its tables may have been created empty), is left as it is.
  std::error_code ec;
  const bool new_file = !is_postgres(to) && !std::filesystem::exists(sqlite_path(to), ec);
  auto discard = [&] {
    if (!new_file) return;
    const std::string path = sqlite_path(to);
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      if (std::filesystem::is_regular_file(path + suffix, ec)) {
        std::filesystem::remove(path + suffix, ec);
      }
    }
  };
  context target{to, c.out, c.err};
  auto into = open(target, true);
  if (!into) {
    discard();
    return fail(c, into.error());
  }
  auto copied = copy_store(**from, **into);
  if (!copied) {
    into->reset();
    discard();
    return fail(c, copied.error());
  }
  auto diff = compare_stores(**from, **into);
  if (!diff) {
    return fail(c, error(diff.error().kind(),
                         fmt::format("copied, but cannot compare the stores: {}",
                                     diff.error().message())));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  for (const auto& d : *diff) fmt::print(c.out, "difference: {}\n", d);
  fmt::print(c.out, "{} events, {} streams, {} schemas copied in {:.2f} s; {}\n", copied->events,
             copied->streams, copied->schemas, seconds,
             diff->empty() ? "verified: every event, stream and schema identical"
                           : "NOT identical (the differences are listed above)");
  return diff->empty() ? 0 : 1;
}

int schema_list(const context& c) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  auto d = payload_decoder::from_store((*a)->store());
  if (!d) return fail(c, d.error());
  for (const auto& s : d->schemas()) {
    fmt::print(c.out, "{}\tversion {}\t{}\t{}\t{}\n", s.type, s.version, to_string(s.mode),
               s.fingerprint, iso_time(s.registered_at_us));
  }
  return 0;
}

int schema_show(const context& c, const std::string& type, std::int32_t version) {
  auto a = open(c);
  if (!a) return fail(c, a.error());
  auto d = payload_decoder::from_store((*a)->store());
  if (!d) return fail(c, d.error());
  const stored_schema* s = version > 0 ? d->find(type, version) : d->pick(type, 0);
  if (!s) {
    return fail(c, error(errc::not_found,
                         version > 0 ? fmt::format("the store has no version {} of type '{}'",
                                                   version, type)
                                     : fmt::format("the store has no schema for type '{}'", type)));
  }
  auto text = d->describe(*s);
  // A stored descriptor set that does not build is damage in the store, not bad input.
  if (!text) return fail(c, error(errc::corruption, text.error().message()));
  fmt::print(c.out, "// {} version {} ({}, fingerprint {}, registered {})\n{}", s->type, s->version,
             to_string(s->mode), s->fingerprint, iso_time(s->registered_at_us), *text);
  return 0;
}

int schema_check(const context& c, const std::string& descriptor_set_file) {
  std::ifstream file(descriptor_set_file, std::ios::binary);
  if (!file) {
    return fail(c, error(errc::io, fmt::format("cannot read '{}': {}", descriptor_set_file,
                                               std::strerror(errno))));
  }
  std::stringstream bytes;
  bytes << file.rdbuf();
  google::protobuf::FileDescriptorSet set;
  if (!set.ParseFromString(bytes.str()) || set.file_size() == 0) {
    return fail(c, error(errc::invalid_argument,
                         fmt::format("'{}' is not a descriptor set (write one with protoc "
                                     "--include_imports --descriptor_set_out=FILE)",
                                     descriptor_set_file)));
  }
  auto a = open(c);
  if (!a) return fail(c, a.error());
  auto report = check_against_store((*a)->store(), set);
  if (!report) return fail(c, report.error());
  fmt::print(c.out, "{}\n", report->to_string());
  return report->compatible() ? 0 : 1;
}

}  // namespace annals::tool
