// Descriptor compatibility rules (annals/schema.hpp has the rule table).
//
// Direction: BACKWARD asks whether readers built from the candidate read events written with
// the stored descriptor; FORWARD asks the reverse. Each rule knows which of the two it breaks,
// so FULL is simply "either".
#include "schema/descriptor_pool.hpp"

#include <annals/schema.hpp>

#include <fmt/format.h>

#include <set>
#include <tuple>
#include <utility>

namespace annals {
namespace {

namespace pb = google::protobuf;
using field_type = pb::FieldDescriptor::Type;

// The conservative table of type changes that keep the wire format. Returns {breaks backward,
// breaks forward}. A widening (every old value fits the new type) only breaks FORWARD: old
// readers would truncate new values (or, for bytes read as string, meet invalid UTF-8).
std::pair<bool, bool> type_change(field_type from, field_type to) {
  using F = pb::FieldDescriptor;
  static constexpr std::pair<field_type, field_type> widenings[] = {
      {F::TYPE_INT32, F::TYPE_INT64},
      {F::TYPE_UINT32, F::TYPE_UINT64},
      {F::TYPE_SINT32, F::TYPE_SINT64},
      {F::TYPE_STRING, F::TYPE_BYTES},
  };
  for (auto [narrow, wide] : widenings) {
    if (from == narrow && to == wide) return {false, true};
    if (from == wide && to == narrow) return {true, false};
  }
  return {true, true};
}

std::string field_label(const pb::FieldDescriptor& f) {
  return fmt::format("{} ({})", f.name(), f.number());
}

std::string type_label(const pb::FieldDescriptor& f) {
  if (f.is_map()) return "map";
  std::string name(f.type_name());
  if (f.message_type()) name = f.message_type()->full_name();
  if (f.enum_type()) name = f.enum_type()->full_name();
  return f.is_repeated() ? "repeated " + name : name;
}

std::string oneof_label(const pb::FieldDescriptor& f) {
  const auto* o = f.real_containing_oneof();
  return o ? fmt::format("oneof {}", o->name()) : std::string("no oneof");
}

class checker {
 public:
  checker(std::string type, compatibility mode, schema_check_report& out)
      : type_(std::move(type)),
        backward_(mode == compatibility::backward || mode == compatibility::full),
        forward_(mode == compatibility::forward || mode == compatibility::full),
        out_(out) {}

  void add(bool breaks_backward, bool breaks_forward, std::string field, std::string rule,
           std::string detail) {
    if ((breaks_backward && backward_) || (breaks_forward && forward_)) {
      out_.violations.push_back({type_, std::move(field), std::move(rule), std::move(detail)});
    }
  }

  void message(const pb::Descriptor& s, const pb::Descriptor& c, const std::string& prefix) {
    if (!seen_.emplace(&s, &c).second) return;  // recursive types: each pair once
    for (int i = 0; i < s.field_count(); ++i) {
      const auto& sf = *s.field(i);
      std::string path = prefix + field_label(sf);
      const auto* cf = c.FindFieldByNumber(sf.number());
      if (!cf) {
        removed(sf, c, path);
        continue;
      }
      field(sf, *cf, prefix + field_label(*cf));
    }
    for (int i = 0; i < c.field_count(); ++i) {
      const auto& cf = *c.field(i);
      if (s.FindFieldByNumber(cf.number())) continue;
      added(s, cf, prefix + field_label(cf));
    }
  }

 private:
  void removed(const pb::FieldDescriptor& sf, const pb::Descriptor& c, const std::string& path) {
    if (sf.is_required()) {
      add(false, true, path, "required-field-removed",
          "a required field was removed: readers with the old descriptor reject new events");
    }
    bool number = c.IsReservedNumber(sf.number());
    bool name = c.IsReservedName(sf.name());
    if (!number || !name) {
      add(true, true, path, "field-removed-unreserved",
          fmt::format("the field was removed without reserving its {}; reserve both so "
                      "they are never reused",
                      !number && !name ? "number and name" : !number ? "number" : "name"));
    }
  }

  void added(const pb::Descriptor& s, const pb::FieldDescriptor& cf, const std::string& path) {
    if (s.IsReservedNumber(cf.number()) || s.IsReservedName(cf.name())) {
      add(true, true, path, "reserved-field-reused",
          "the field uses a number or name the stored descriptor reserved: old events may "
          "hold the removed field's values");
    }
    if (cf.is_required()) {
      add(true, false, path, "required-field-added",
          "a new required field: events written before it lack it and fail to parse");
    }
    if (const auto* o = cf.real_containing_oneof()) {
      const auto* old = s.FindOneofByName(o->name());
      if (old && !old->is_synthetic()) {
        add(false, true, path, "oneof-field-added",
            fmt::format("a new member of oneof {}: old readers see the oneof as unset",
                        o->name()));
      }
    }
  }

  void field(const pb::FieldDescriptor& sf, const pb::FieldDescriptor& cf,
             const std::string& path) {
    if (sf.is_map() != cf.is_map() || sf.is_repeated() != cf.is_repeated()) {
      add(true, true, path, "field-cardinality-changed",
          fmt::format("{} became {}", type_label(sf), type_label(cf)));
      return;
    }
    if (!sf.is_required() && cf.is_required()) {
      add(true, false, path, "field-became-required",
          "optional became required: old events without it fail to parse");
    } else if (sf.is_required() && !cf.is_required()) {
      add(false, true, path, "field-became-optional",
          "required became optional: old readers reject new events without it");
    }
    if (sf.real_containing_oneof() || cf.real_containing_oneof()) {
      std::string from = oneof_label(sf), to = oneof_label(cf);
      if (from != to) {
        add(true, true, path, "oneof-membership-changed",
            fmt::format("moved from {} to {}", from, to));
      }
    }
    if (sf.type() != cf.type()) {
      auto [backward, forward] = type_change(sf.type(), cf.type());
      add(backward, forward, path, "field-type-changed",
          fmt::format("{} became {}{}", type_label(sf), type_label(cf),
                      backward && forward ? ""
                      : backward          ? " (narrowed: old values may not fit)"
                                          : " (widened: old readers may truncate new values)"));
      return;
    }
    if (const auto* sm = sf.message_type()) {
      const auto* cm = cf.message_type();
      if (sm->full_name() != cm->full_name()) {
        add(true, true, path, "field-type-changed",
            fmt::format("{} became {}", type_label(sf), type_label(cf)));
        return;
      }
      message(*sm, *cm, path + ".");
    } else if (const auto* se = sf.enum_type()) {
      const auto* ce = cf.enum_type();
      if (se->full_name() != ce->full_name()) {
        add(true, true, path, "field-type-changed",
            fmt::format("{} became {}", type_label(sf), type_label(cf)));
        return;
      }
      enumeration(*se, *ce, path);
    }
  }

  void enumeration(const pb::EnumDescriptor& s, const pb::EnumDescriptor& c,
                   const std::string& path) {
    for (int i = 0; i < s.value_count(); ++i) {
      const auto& v = *s.value(i);
      if (c.FindValueByNumber(v.number()) || c.IsReservedNumber(v.number())) continue;
      add(true, false, path, "enum-value-removed",
          fmt::format("{} value {} = {} was removed without reserving its number: old events "
                      "hold it",
                      s.full_name(), v.name(), v.number()));
    }
    for (int i = 0; i < c.value_count(); ++i) {
      const auto& v = *c.value(i);
      if (s.FindValueByNumber(v.number())) continue;
      add(false, true, path, "enum-value-added",
          fmt::format("{} value {} = {} is new: old readers do not know it", c.full_name(),
                      v.name(), v.number()));
    }
  }

  std::string type_;
  bool backward_, forward_;
  schema_check_report& out_;
  std::set<std::pair<const pb::Descriptor*, const pb::Descriptor*>> seen_;
};

}  // namespace

schema_check_report check_compatibility(const pb::FileDescriptorSet& stored_set,
                                        std::string_view stored_type,
                                        const pb::FileDescriptorSet& candidate_set,
                                        std::string_view candidate_type, compatibility mode) {
  schema_check_report report;
  if (mode == compatibility::none) return report;
  std::string type(candidate_type);
  schema_detail::set_pool stored(stored_set), candidate(candidate_set);
  const auto* s = stored.pool().FindMessageTypeByName(std::string(stored_type));
  const auto* c = candidate.pool().FindMessageTypeByName(type);
  for (auto [found, pool, which, name] :
       {std::tuple{s, &stored, "stored", stored_type}, {c, &candidate, "candidate", candidate_type}}) {
    if (!found || !pool->errors().empty()) {
      report.violations.push_back(
          {type, "", "descriptor-invalid",
           pool->errors().empty()
               ? fmt::format("the {} descriptor set does not define {}", which, name)
               : fmt::format("the {} descriptor set does not build: {}", which, pool->errors())});
      return report;
    }
  }
  checker check(type, mode, report);
  if (stored_type != candidate_type) {
    check.add(true, true, "", "type-renamed",
              fmt::format("{} was stored as {}; a type keeps its name for life (a rename goes "
                          "through an upcaster to a new type)",
                          candidate_type, stored_type));
  }
  check.message(*s, *c, "");
  return report;
}

}  // namespace annals
