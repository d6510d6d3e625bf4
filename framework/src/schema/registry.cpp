// The schema registry (annals/schema.hpp): descriptor sets, fingerprints, registration and the
// offline check. The storage primitives are event_store::read_schemas / register_schemas; the
// rules are in compatibility.cpp.
#include "schema/descriptor_pool.hpp"

#include <annals/schema.hpp>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <fmt/format.h>

#include <map>
#include <set>
#include <tuple>
#include <unordered_set>

namespace annals {
namespace {

namespace pb = google::protobuf;

// Serialization with map entries and unknown fields in a fixed order, so one descriptor always
// gives the same bytes (and fingerprint) in this library version.
std::string serialize_deterministic(const pb::Message& m) {
  std::string out;
  {
    pb::io::StringOutputStream stream(&out);
    pb::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

// Adds `file` after every file it depends on (depth first, in declaration order).
void add_with_dependencies(const pb::FileDescriptor& file,
                           std::unordered_set<std::string>& added, pb::FileDescriptorSet& set) {
  if (!added.insert(std::string(file.name())).second) return;
  for (int i = 0; i < file.dependency_count(); ++i) {
    add_with_dependencies(*file.dependency(i), added, set);
  }
  file.CopyTo(set.add_file());
}

// protoc's default JSON name of a field (descriptor.cc ToJsonName).
std::string default_json_name(std::string_view name) {
  std::string out;
  bool upper = false;
  for (char c : name) {
    if (c == '_') {
      upper = true;
    } else {
      out += upper && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
      upper = false;
    }
  }
  return out;
}

// protoc --descriptor_set_out writes every field's json_name; compiled descriptors keep only
// explicit ones. A default one says nothing: drop it so both give the same bytes.
void drop_default_json_names(pb::DescriptorProto& m) {
  for (auto* fields : {m.mutable_field(), m.mutable_extension()}) {
    for (auto& f : *fields) {
      if (f.has_json_name() && f.json_name() == default_json_name(f.name())) f.clear_json_name();
    }
  }
  for (auto& nested : *m.mutable_nested_type()) drop_default_json_names(nested);
}

// The bytes type_fingerprint hashes: each type of the closure once, as
// "<kind> <full name> <syntax> <length>\n<deterministic DescriptorProto bytes>".
class type_closure {
 public:
  explicit type_closure(const pb::Descriptor& root) {
    out_ = "annals.type_fingerprint.1\n";
    message(root);
  }
  const std::string& bytes() const { return out_; }

 private:
  void message(const pb::Descriptor& d) {
    if (!seen_.insert(&d).second) return;
    mark_nested(d);  // in d's DescriptorProto already
    pb::DescriptorProto proto;
    d.CopyTo(&proto);
    drop_default_json_names(proto);
    emit('M', d.full_name(), *d.file(), serialize_deterministic(proto));
    references(d);
  }

  void enumeration(const pb::EnumDescriptor& e) {
    if (!seen_.insert(&e).second) return;
    pb::EnumDescriptorProto proto;
    e.CopyTo(&proto);
    emit('E', e.full_name(), *e.file(), serialize_deterministic(proto));
  }

  void mark_nested(const pb::Descriptor& d) {
    for (int i = 0; i < d.enum_type_count(); ++i) seen_.insert(d.enum_type(i));
    for (int i = 0; i < d.nested_type_count(); ++i) {
      seen_.insert(d.nested_type(i));
      mark_nested(*d.nested_type(i));
    }
  }

  // The types the fields of d and of its nested types refer to, in declaration order.
  void references(const pb::Descriptor& d) {
    auto follow = [&](const pb::FieldDescriptor& f) {
      if (const auto* m = f.message_type()) message(*m);
      if (const auto* e = f.enum_type()) enumeration(*e);
    };
    for (int i = 0; i < d.field_count(); ++i) follow(*d.field(i));
    for (int i = 0; i < d.extension_count(); ++i) follow(*d.extension(i));
    for (int i = 0; i < d.nested_type_count(); ++i) references(*d.nested_type(i));
  }

  void emit(char kind, std::string_view name, const pb::FileDescriptor& file,
            const std::string& proto) {
    out_ += fmt::format("{} {} {} {}\n", kind, name,
                        pb::FileDescriptor::SyntaxName(file.syntax()), proto.size());
    out_ += proto;
  }

  std::string out_;
  std::unordered_set<const void*> seen_;
};

result<pb::FileDescriptorSet> parse_set(const std::string& bytes, std::string_view what) {
  pb::FileDescriptorSet set;
  if (!set.ParseFromString(bytes)) {
    return error(errc::corruption,
                 fmt::format("{} is not a serialized FileDescriptorSet", what));
  }
  return set;
}

// Keeps the first violation of each (type, field, rule): checking against several stored
// versions finds the same break again in each.
void merge(schema_check_report& into, schema_check_report&& from,
           std::set<std::tuple<std::string, std::string, std::string>>& seen) {
  for (auto& v : from.violations) {
    if (seen.emplace(v.type, v.field, v.rule).second) into.violations.push_back(std::move(v));
  }
}

// Checks one candidate against every stored version of its type (transitive), with `mode`.
// `stored` holds only that type's versions. A fingerprint already stored is compatible: it is
// one of the versions.
result<void> check_one(const std::vector<const stored_schema*>& stored,
                       const pb::FileDescriptorSet& candidate_set, std::string_view type,
                       std::string_view fingerprint, compatibility mode,
                       schema_check_report& report,
                       std::set<std::tuple<std::string, std::string, std::string>>& seen) {
  for (const auto* s : stored) {
    if (s->fingerprint == fingerprint) return {};
  }
  if (mode == compatibility::none) return {};
  for (const auto* s : stored) {
    auto stored_set = parse_set(s->descriptor_set,
                                fmt::format("stored schema {} version {}", s->type, s->version));
    if (!stored_set) return std::move(stored_set).error();
    auto r = check_compatibility(*stored_set, s->type, candidate_set, type, mode);
    for (auto& v : r.violations) {
      v.detail = fmt::format("{} (against stored version {})", v.detail, s->version);
    }
    merge(report, std::move(r), seen);
  }
  return {};
}

using seen_set = std::set<std::tuple<std::string, std::string, std::string>>;

// Reports every stored type, registered BACKWARD or FULL, that one of `files` (candidate
// files by name) defined in its latest stored version and that the candidates' pool no longer
// has: its events stay in the log, and new readers cannot decode them. A type moved to another
// file still exists. Shared by registration and the offline check.
result<void> check_removed_types(const std::vector<stored_schema>& stored,
                                 const std::map<std::string, const pb::FileDescriptor*>& files,
                                 schema_check_report& report, seen_set& seen) {
  std::map<std::string, const stored_schema*> latest;
  for (const auto& s : stored) {
    auto& l = latest[s.type];
    if (!l || s.version > l->version) l = &s;
  }
  // A candidate file exactly as some registration already stored it is an older build of the
  // application (a rollback, or a worker not yet redeployed), not a new edit of the file: it
  // is not checked for removed types, or adding a message would lock the old build out.
  std::set<std::string> stored_files;
  for (const auto& s : stored) {
    auto set = parse_set(s.descriptor_set,
                         fmt::format("stored schema {} version {}", s.type, s.version));
    if (!set) return std::move(set).error();
    for (const auto& f : set->file()) {
      if (files.count(f.name())) stored_files.insert(serialize_deterministic(f));
    }
  }
  std::set<std::string> known_files;
  for (const auto& [name, file] : files) {
    pb::FileDescriptorProto p;
    file->CopyTo(&p);
    if (stored_files.count(serialize_deterministic(p))) known_files.insert(name);
  }
  for (const auto& [type, s] : latest) {
    if (s->mode != compatibility::backward && s->mode != compatibility::full) continue;
    auto set = parse_set(s->descriptor_set,
                         fmt::format("stored schema {} version {}", type, s->version));
    if (!set) return std::move(set).error();
    pb::SimpleDescriptorDatabase db;
    for (const auto& f : set->file()) db.Add(f);
    pb::FileDescriptorProto file;
    if (!db.FindFileContainingSymbol(type, &file)) continue;
    auto it = files.find(file.name());
    if (it == files.end() || known_files.count(file.name()) ||
        it->second->pool()->FindMessageTypeByName(type)) {
      continue;
    }
    merge(report,
          schema_check_report{{schema_violation{
              type, "", "type-renamed",
              fmt::format("file '{}' no longer defines {}, renamed or removed, but its events "
                          "stay in the log; a type keeps its name for life: keep the old "
                          "message and add an upcaster from it to the new type",
                          file.name(), type)}}},
          seen);
  }
  return {};
}

}  // namespace

std::string_view to_string(compatibility c) noexcept {
  switch (c) {
    case compatibility::backward: return "backward";
    case compatibility::forward: return "forward";
    case compatibility::full: return "full";
    case compatibility::none: return "none";
  }
  return "backward";
}

result<compatibility> parse_compatibility(std::string_view text) {
  for (auto c : {compatibility::backward, compatibility::forward, compatibility::full,
                 compatibility::none}) {
    if (text == to_string(c)) return c;
  }
  return error(errc::invalid_argument,
               fmt::format("unknown compatibility mode '{}' (use backward, forward, full or none)",
                           text.substr(0, 64)));
}

std::string schema_check_report::to_string() const {
  if (violations.empty()) return "compatible";
  std::string out;
  for (const auto& v : violations) {
    if (!out.empty()) out += '\n';
    if (v.field.empty()) {
      out += fmt::format("{}: {}: {}", v.type, v.rule, v.detail);
    } else {
      out += fmt::format("{}: field {}: {}: {}", v.type, v.field, v.rule, v.detail);
    }
  }
  return out;
}

std::string descriptor_set_of(const pb::Descriptor& type) {
  pb::FileDescriptorSet set;
  std::unordered_set<std::string> added;
  add_with_dependencies(*type.file(), added, set);
  return serialize_deterministic(set);
}

std::string type_fingerprint(const pb::Descriptor& type) {
  return schema_fingerprint(type_closure(type).bytes());
}

std::string schema_fingerprint(std::string_view descriptor_set) {
  // FNV-1a, 128-bit: stable across platforms and library versions, no dependency.
  unsigned __int128 h = (static_cast<unsigned __int128>(0x6c62272e07bb0142ULL) << 64) |
                        0x62b821756295c58dULL;
  const unsigned __int128 prime =
      (static_cast<unsigned __int128>(0x0000000001000000ULL) << 64) | 0x000000000000013BULL;
  for (unsigned char byte : descriptor_set) {
    h ^= byte;
    h *= prime;
  }
  return fmt::format("{:016x}{:016x}", static_cast<std::uint64_t>(h >> 64),
                     static_cast<std::uint64_t>(h));
}

result<std::vector<registered_type>> register_event_types(
    event_store& store, const std::vector<schema_registration>& types) {
  std::vector<schema_candidate> candidates;
  std::vector<pb::FileDescriptorSet> sets;
  candidates.reserve(types.size());
  sets.reserve(types.size());
  for (std::size_t i = 0; i < types.size(); ++i) {
    if (!types[i].type) {
      return error(errc::invalid_argument, fmt::format("schema registration {} has no type", i));
    }
    if (types[i].version < 0) {
      return error(errc::invalid_argument,
                   fmt::format("schema registration of {}: version must not be negative",
                               types[i].type->full_name()));
    }
    schema_candidate c;
    c.type = std::string(types[i].type->full_name());
    c.mode = types[i].mode;
    c.version = types[i].version;
    c.descriptor_set = descriptor_set_of(*types[i].type);
    c.fingerprint = type_fingerprint(*types[i].type);
    sets.emplace_back().ParseFromString(c.descriptor_set);
    candidates.push_back(std::move(c));
  }
  std::map<std::string, const pb::FileDescriptor*> files;
  for (const auto& t : types) files.emplace(std::string(t.type->file()->name()), t.type->file());
  // Runs inside the store's write lock, on the versions stored at that moment.
  auto check = [&](const std::vector<stored_schema>& stored) -> result<void> {
    schema_check_report report;
    std::set<std::tuple<std::string, std::string, std::string>> seen;
    // `stored` holds the candidates' types only; a removed type is another one. Registrations
    // are serialized by the write lock, so this read sees every registered type.
    auto all = store.read_schemas();
    if (!all) return std::move(all).error();
    if (auto r = check_removed_types(*all, files, report, seen); !r) return r;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      std::vector<const stored_schema*> mine;
      for (const auto& s : stored) {
        if (s.type == candidates[i].type) mine.push_back(&s);
      }
      if (auto r = check_one(mine, sets[i], candidates[i].type, candidates[i].fingerprint,
                             candidates[i].mode, report, seen);
          !r) {
        return r;
      }
    }
    if (!report.compatible()) return error(errc::invalid_argument, report.to_string());
    return {};
  };
  return store.register_schemas(candidates, check);
}

result<schema_check_report> check_against_store(event_store& store,
                                                const pb::FileDescriptorSet& candidates) {
  // The candidate set must build: every file with its dependencies.
  schema_detail::set_pool candidate_pool(candidates);
  std::map<std::string, const pb::FileDescriptor*> candidate_files;
  for (const auto& f : candidates.file()) {
    const pb::FileDescriptor* built = candidate_pool.pool().FindFileByName(f.name());
    if (!built || !candidate_pool.errors().empty()) {
      return error(errc::invalid_argument,
                   fmt::format("the descriptor set does not build: {}",
                               candidate_pool.errors().empty()
                                   ? fmt::format("file '{}' is invalid", f.name())
                                   : candidate_pool.errors()));
    }
    candidate_files.emplace(f.name(), built);
  }

  auto stored = store.read_schemas();
  if (!stored) return std::move(stored).error();
  std::map<std::string, std::vector<const stored_schema*>> by_type;
  for (const auto& s : *stored) by_type[s.type].push_back(&s);

  schema_check_report report;
  std::set<std::tuple<std::string, std::string, std::string>> seen;
  if (auto r = check_removed_types(*stored, candidate_files, report, seen); !r) {
    return r.error();
  }
  for (const auto& [type, versions] : by_type) {
    compatibility mode = versions.back()->mode;  // the mode it was last registered with
    const pb::Descriptor* candidate = candidate_pool.pool().FindMessageTypeByName(type);
    if (!candidate) continue;  // another file's type, or removed (above)
    std::string fingerprint = type_fingerprint(*candidate);
    if (auto r = check_one(versions, candidates, type, fingerprint, mode, report, seen); !r) {
      return r.error();
    }
  }
  return report;
}

}  // namespace annals
