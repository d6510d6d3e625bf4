// Compatibility rules: one good and one breaking case per rule, and which modes each breaks.
#include "schema/descriptors.hpp"

#include <annals/schema.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace annals;
using namespace annals::test;

namespace {

constexpr auto backward = compatibility::backward;
constexpr auto forward = compatibility::forward;
constexpr auto full = compatibility::full;
constexpr auto none = compatibility::none;

schema_check_report check(const std::string& stored_body, const std::string& candidate_body,
                          compatibility mode, const std::string& syntax = "proto3",
                          const std::string& stored_type = "t.E",
                          const std::string& candidate_type = "t.E") {
  auto report = check_compatibility(set_of(stored_body, syntax), stored_type,
                                    set_of(candidate_body, syntax), candidate_type, mode);
  INFO(report.to_string());
  return report;
}

// The rule ids of a report.
std::vector<std::string> rules(const schema_check_report& r) {
  std::vector<std::string> out;
  for (const auto& v : r.violations) out.push_back(v.rule);
  return out;
}

bool has(const schema_check_report& r, const std::string& rule) {
  auto ids = rules(r);
  return std::find(ids.begin(), ids.end(), rule) != ids.end();
}

const schema_violation* find(const schema_check_report& r, const std::string& rule) {
  for (const auto& v : r.violations) {
    if (v.rule == rule) return &v;
  }
  return nullptr;
}

const std::string base = message(
    "E", field("id", 1, "TYPE_STRING") + field("amount", 2, "TYPE_INT64"));

}  // namespace

TEST_CASE("an identical descriptor is compatible in every mode") {
  for (auto mode : {backward, forward, full, none}) {
    auto r = check(base, base, mode);
    CHECK(r.compatible());
    CHECK(r.to_string() == "compatible");
  }
}

TEST_CASE("adding an optional field is compatible in every mode") {
  auto more = message("E", field("id", 1, "TYPE_STRING") + field("amount", 2, "TYPE_INT64") +
                               field("note", 3, "TYPE_STRING"));
  for (auto mode : {backward, forward, full}) CHECK(check(base, more, mode).compatible());
}

TEST_CASE("type-renamed: registering a type under another name breaks every checked mode") {
  auto renamed = message("F", field("id", 1, "TYPE_STRING") + field("amount", 2, "TYPE_INT64"));
  auto both = base + " " + renamed;
  for (auto mode : {backward, forward, full}) {
    auto r = check(both, both, mode, "proto3", "t.E", "t.F");
    REQUIRE(has(r, "type-renamed"));
    CHECK(find(r, "type-renamed")->field.empty());
    CHECK(find(r, "type-renamed")->type == "t.F");
  }
  CHECK(check(both, both, none, "proto3", "t.E", "t.F").compatible());
  CHECK(check(both, both, full, "proto3", "t.E", "t.E").compatible());
}

TEST_CASE("field-type-changed: a number reused with an incompatible type breaks both directions") {
  auto changed = message("E", field("id", 1, "TYPE_STRING") + field("amount", 2, "TYPE_STRING"));
  for (auto mode : {backward, forward, full}) {
    auto r = check(base, changed, mode);
    REQUIRE(has(r, "field-type-changed"));
    CHECK(find(r, "field-type-changed")->field == "amount (2)");
    CHECK(find(r, "field-type-changed")->type == "t.E");
  }
  // Renaming a field while keeping its number and type is binary compatible.
  auto renamed = message("E", field("id", 1, "TYPE_STRING") + field("total", 2, "TYPE_INT64"));
  CHECK(check(base, renamed, full).compatible());
  // fixed32 and int32 differ on the wire; sint32 and int32 differ in encoding.
  auto a = message("E", field("x", 1, "TYPE_INT32"));
  CHECK(has(check(a, message("E", field("x", 1, "TYPE_FIXED32")), backward), "field-type-changed"));
  CHECK(has(check(a, message("E", field("x", 1, "TYPE_SINT32")), backward), "field-type-changed"));
  CHECK(has(check(a, message("E", field("x", 1, "TYPE_UINT32")), backward), "field-type-changed"));
}

TEST_CASE("field-type-changed: widening breaks only FORWARD, narrowing only BACKWARD") {
  for (const auto& types : {std::pair<std::string, std::string>{"TYPE_INT32", "TYPE_INT64"},
                            {"TYPE_UINT32", "TYPE_UINT64"},
                            {"TYPE_SINT32", "TYPE_SINT64"},
                            {"TYPE_STRING", "TYPE_BYTES"}}) {
    const std::string& narrow = types.first;
    const std::string& wide = types.second;
    CAPTURE(narrow);
    auto n = message("E", field("x", 1, narrow));
    auto w = message("E", field("x", 1, wide));
    CHECK(check(n, w, backward).compatible());
    CHECK(has(check(n, w, forward), "field-type-changed"));
    CHECK(has(check(n, w, full), "field-type-changed"));
    CHECK(has(check(w, n, backward), "field-type-changed"));
    CHECK(check(w, n, forward).compatible());
  }
}

TEST_CASE("field-type-changed: a message field pointing at another message type") {
  auto types = message("A", field("v", 1, "TYPE_INT32")) + " " +
               message("B", field("v", 1, "TYPE_INT32"));
  auto to_a = message("E", field("m", 1, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.A\""));
  auto to_b = message("E", field("m", 1, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.B\""));
  CHECK(check(types + " " + to_a, types + " " + to_a, full).compatible());
  auto r = check(types + " " + to_a, types + " " + to_b, backward);
  REQUIRE(has(r, "field-type-changed"));
  CHECK(find(r, "field-type-changed")->detail.find("t.B") != std::string::npos);
}

TEST_CASE("nested messages are walked recursively and violations name the path") {
  auto outer = [](const std::string& inner_type) {
    return "message_type { name: \"E\" " +
           field("details", 3, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.E.Inner\"") +
           " nested_type { name: \"Inner\" " + field("value", 1, inner_type) +
           field("self", 2, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.E.Inner\"") +
           " } }";
  };
  CHECK(check(outer("TYPE_INT32"), outer("TYPE_INT32"), full).compatible());
  auto r = check(outer("TYPE_INT32"), outer("TYPE_DOUBLE"), backward);
  REQUIRE(r.violations.size() == 1);  // the recursive `self` field is walked once
  CHECK(r.violations[0].rule == "field-type-changed");
  CHECK(r.violations[0].field == "details (3).value (1)");
  CHECK(r.to_string() == "t.E: field details (3).value (1): field-type-changed: " +
                             r.violations[0].detail);
}

TEST_CASE("field-cardinality-changed: singular <-> repeated, map <-> repeated message") {
  auto one = message("E", field("x", 1, "TYPE_STRING"));
  auto many = message("E", field("x", 1, "TYPE_STRING", "LABEL_REPEATED"));
  CHECK(check(many, many, full).compatible());
  for (auto mode : {backward, forward}) {
    CHECK(has(check(one, many, mode), "field-cardinality-changed"));
    CHECK(has(check(many, one, mode), "field-cardinality-changed"));
  }
  // Packed or not: parsers accept both encodings, so it is not a break.
  auto packed = message("E", field("n", 1, "TYPE_INT32", "LABEL_REPEATED", "options { packed: true }"));
  auto unpacked =
      message("E", field("n", 1, "TYPE_INT32", "LABEL_REPEATED", "options { packed: false }"));
  CHECK(check(packed, unpacked, full).compatible());
  // A map and a repeated message of the same entry shape differ in meaning.
  auto entry = [](bool map_entry) {
    return std::string(" nested_type { name: \"MEntry\" ") + field("key", 1, "TYPE_STRING") +
           field("value", 2, "TYPE_INT32") +
           (map_entry ? " options { map_entry: true }" : "") + " }";
  };
  auto m = [&](bool map_entry) {
    return "message_type { name: \"E\" " +
           field("m", 1, "TYPE_MESSAGE", "LABEL_REPEATED", "type_name: \".t.E.MEntry\"") +
           entry(map_entry) + " }";
  };
  CHECK(check(m(true), m(true), full).compatible());
  CHECK(has(check(m(true), m(false), backward), "field-cardinality-changed"));
}

TEST_CASE("field-removed-unreserved: a removed field must reserve its number and name") {
  auto removed = message("E", field("id", 1, "TYPE_STRING"));
  for (auto mode : {backward, forward, full}) {
    auto r = check(base, removed, mode);
    REQUIRE(has(r, "field-removed-unreserved"));
    CHECK(find(r, "field-removed-unreserved")->field == "amount (2)");
  }
  auto number_only = message("E", field("id", 1, "TYPE_STRING") +
                                      " reserved_range { start: 2 end: 3 }");
  auto r = check(base, number_only, backward);
  REQUIRE(has(r, "field-removed-unreserved"));
  CHECK(find(r, "field-removed-unreserved")->detail.find("name") != std::string::npos);
  auto reserved = message("E", field("id", 1, "TYPE_STRING") +
                                   " reserved_range { start: 2 end: 3 } reserved_name: \"amount\"");
  CHECK(check(base, reserved, full).compatible());
  CHECK(check(base, removed, none).compatible());
}

TEST_CASE("reserved-field-reused: a reserved number or name used again") {
  auto reserved = message("E", field("id", 1, "TYPE_STRING") +
                                   " reserved_range { start: 2 end: 3 } reserved_name: \"amount\"");
  auto reused = message("E", field("id", 1, "TYPE_STRING") + field("price", 2, "TYPE_INT64"));
  auto reused_name = message("E", field("id", 1, "TYPE_STRING") + field("amount", 4, "TYPE_INT64"));
  auto fresh = message("E", field("id", 1, "TYPE_STRING") + field("price", 3, "TYPE_INT64") +
                                " reserved_range { start: 2 end: 3 } reserved_name: \"amount\"");
  CHECK(has(check(reserved, reused, backward), "reserved-field-reused"));
  CHECK(has(check(reserved, reused_name, forward), "reserved-field-reused"));
  CHECK(check(reserved, fresh, full).compatible());
}

namespace {
std::string with_enum(const std::string& values) {
  return "message_type { name: \"E\" " +
         field("kind", 1, "TYPE_ENUM", "LABEL_OPTIONAL", "type_name: \".t.E.Kind\"") +
         " enum_type { name: \"Kind\" " + values + " } }";
}
std::string value(const std::string& name, int number) {
  return "value { name: \"" + name + "\" number: " + std::to_string(number) + " }";
}
}  // namespace

TEST_CASE("enum-value-removed breaks BACKWARD unless its number is reserved") {
  auto three = with_enum(value("KIND_UNSPECIFIED", 0) + value("A", 1) + value("B", 2));
  auto two = with_enum(value("KIND_UNSPECIFIED", 0) + value("A", 1));
  auto reserved = with_enum(value("KIND_UNSPECIFIED", 0) + value("A", 1) +
                            " reserved_range { start: 2 end: 2 } reserved_name: \"B\"");
  auto r = check(three, two, backward);
  REQUIRE(has(r, "enum-value-removed"));
  CHECK(find(r, "enum-value-removed")->field == "kind (1)");
  CHECK(find(r, "enum-value-removed")->detail.find("B = 2") != std::string::npos);
  CHECK(has(check(three, two, full), "enum-value-removed"));
  CHECK(check(three, two, forward).compatible());
  CHECK(check(three, reserved, backward).compatible());
}

TEST_CASE("enum-value-added breaks FORWARD only") {
  auto two = with_enum(value("KIND_UNSPECIFIED", 0) + value("A", 1));
  auto three = with_enum(value("KIND_UNSPECIFIED", 0) + value("A", 1) + value("B", 2));
  CHECK(check(two, three, backward).compatible());
  CHECK(has(check(two, three, forward), "enum-value-added"));
  CHECK(has(check(two, three, full), "enum-value-added"));
  CHECK(check(two, two, full).compatible());
}

namespace {
// Fields a (1) and b (2); `a_oneof` / `b_oneof` give each field's oneof index (-1: none).
std::string oneofs(int a_oneof, int b_oneof, int c_oneof = -2) {
  auto idx = [](int i) { return i < 0 ? std::string() : "oneof_index: " + std::to_string(i); };
  std::string fields = field("a", 1, "TYPE_STRING", "LABEL_OPTIONAL", idx(a_oneof)) +
                       field("b", 2, "TYPE_STRING", "LABEL_OPTIONAL", idx(b_oneof));
  if (c_oneof != -2) fields += field("c", 3, "TYPE_STRING", "LABEL_OPTIONAL", idx(c_oneof));
  bool second = a_oneof == 1 || b_oneof == 1 || c_oneof == 1;
  return message("E", fields + " oneof_decl { name: \"first\" }" +
                          (second ? " oneof_decl { name: \"second\" }" : ""));
}
}  // namespace

TEST_CASE("oneof-membership-changed: into, out of, or between oneofs") {
  CHECK(check(oneofs(0, 0), oneofs(0, 0), full).compatible());
  for (auto mode : {backward, forward}) {
    auto into = check(oneofs(-1, 0), oneofs(0, 0), mode);
    REQUIRE(has(into, "oneof-membership-changed"));
    CHECK(find(into, "oneof-membership-changed")->field == "a (1)");
    CHECK(has(check(oneofs(0, 0), oneofs(-1, 0), mode), "oneof-membership-changed"));
    CHECK(has(check(oneofs(0, 0), oneofs(1, 0), mode), "oneof-membership-changed"));
  }
  // proto3 `optional` is a synthetic oneof: not a membership.
  auto plain = message("E", field("a", 1, "TYPE_STRING"));
  auto optional = message("E", field("a", 1, "TYPE_STRING", "LABEL_OPTIONAL",
                                     "oneof_index: 0 proto3_optional: true") +
                                   " oneof_decl { name: \"_a\" }");
  CHECK(check(plain, optional, full).compatible());
}

TEST_CASE("oneof-field-added: a new member of an existing oneof breaks FORWARD only") {
  CHECK(check(oneofs(0, 0), oneofs(0, 0, 0), backward).compatible());
  CHECK(has(check(oneofs(0, 0), oneofs(0, 0, 0), forward), "oneof-field-added"));
  // A new field outside any oneof is fine.
  CHECK(check(oneofs(0, 0), oneofs(0, 0, -1), full).compatible());
}

TEST_CASE("required fields (proto2): added, removed, optional <-> required") {
  const std::string p2 = "proto2";
  auto opt = message("E", field("a", 1, "TYPE_INT32"));
  auto req = message("E", field("a", 1, "TYPE_INT32", "LABEL_REQUIRED"));
  auto with_req_b = message("E", field("a", 1, "TYPE_INT32") +
                                     field("b", 2, "TYPE_INT32", "LABEL_REQUIRED"));
  auto with_opt_b = message("E", field("a", 1, "TYPE_INT32") + field("b", 2, "TYPE_INT32"));
  auto b_removed = message("E", field("a", 1, "TYPE_INT32") +
                                    " reserved_range { start: 2 end: 3 } reserved_name: \"b\"");
  // Added: old events lack it.
  CHECK(has(check(opt, with_req_b, backward, p2), "required-field-added"));
  CHECK(check(opt, with_req_b, forward, p2).compatible());
  CHECK(check(opt, with_opt_b, full, p2).compatible());
  // Removed (even reserved): old readers require it.
  CHECK(has(check(with_req_b, b_removed, forward, p2), "required-field-removed"));
  CHECK(check(with_req_b, b_removed, backward, p2).compatible());
  CHECK(check(with_opt_b, b_removed, full, p2).compatible());
  // optional -> required breaks BACKWARD; required -> optional breaks FORWARD.
  CHECK(has(check(opt, req, backward, p2), "field-became-required"));
  CHECK(check(opt, req, forward, p2).compatible());
  CHECK(has(check(req, opt, forward, p2), "field-became-optional"));
  CHECK(check(req, opt, backward, p2).compatible());
  CHECK(check(req, req, full, p2).compatible());
}

TEST_CASE("a set that lacks the type or does not build is reported, not crashed on") {
  auto r = check(base, message("Other", field("x", 1, "TYPE_INT32")), backward);
  REQUIRE(has(r, "descriptor-invalid"));
  pb::FileDescriptorSet broken;
  *broken.add_file() = file_proto(message("E", field("m", 1, "TYPE_MESSAGE", "LABEL_OPTIONAL",
                                                     "type_name: \".nowhere.Missing\"")));
  auto b = check_compatibility(set_of(base), "t.E", broken, "t.E", backward);
  REQUIRE(has(b, "descriptor-invalid"));
  CHECK(find(b, "descriptor-invalid")->detail.find(".nowhere.Missing") != std::string::npos);
  CHECK(check_compatibility(set_of(base), "t.E", broken, "t.E", none).compatible());
}

TEST_CASE("a report lists one violation per line with type, field, rule and detail") {
  auto changed = message("E", field("id", 1, "TYPE_INT32"));  // id retyped, amount removed
  auto r = check(base, changed, backward);
  REQUIRE(r.violations.size() == 2);
  auto text = r.to_string();
  CHECK(text.find("t.E: field id (1): field-type-changed: ") == 0);
  CHECK(text.find("\nt.E: field amount (2): field-removed-unreserved: ") != std::string::npos);
}

TEST_CASE("compatibility modes print and parse") {
  for (auto mode : {backward, forward, full, none}) {
    auto parsed = parse_compatibility(to_string(mode));
    REQUIRE(parsed.ok());
    CHECK(parsed.value() == mode);
  }
  auto bad = parse_compatibility("BACKWARDS");
  REQUIRE(!bad.ok());
  CHECK(bad.error().kind() == errc::invalid_argument);
  CHECK(bad.error().message().find("BACKWARDS") != std::string::npos);
}
