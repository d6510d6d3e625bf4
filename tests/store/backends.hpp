// Backend fixtures and helpers shared by the event-store suites.
//
// A backend fixture owns one empty store for the duration of a test case and can open any
// number of event_store instances on it (a second open of the same fixture sees the same
// events, as a second process would). The conformance suite runs every case over the type
// list ANNALS_STORE_BACKENDS; a new backend (PostgreSQL) adds its fixture here and to the list.
//
//   struct some_backend {
//     std::unique_ptr<annals::event_store> open(const backend_options& = {});
//     std::string uri() const;  // what annals::open_store() accepts for this store
//   };
#pragma once

#include <annals/event_store.hpp>
#include <annals/store.hpp>
#include <annals/result.hpp>

#include <doctest/doctest.h>

#include "support/postgres.hpp"
#include "support/support.hpp"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace doctest {
template <>
struct StringMaker<annals::errc> {
  static String convert(annals::errc e) {
    return String(std::string(annals::to_string(e)).c_str());
  }
};
template <>
struct StringMaker<std::optional<annals::errc>> {
  static String convert(const std::optional<annals::errc>& e) {
    return e ? String(std::string(annals::to_string(*e)).c_str()) : String("ok");
  }
};
}  // namespace doctest

namespace annals::test {

// Options every backend understands (the injectable parts of sqlite_options).
struct backend_options {
  std::function<std::int64_t()> clock;
  std::function<std::string()> id_source;
};

struct sqlite_backend {
  temp_dir dir;
  std::string path = dir.file("store.db");

  std::unique_ptr<event_store> open(const backend_options& o = {}) {
    sqlite_options so;
    so.clock = o.clock;
    so.id_source = o.id_source;
    auto r = open_sqlite_store(path, std::move(so));
    if (!r) FAIL("cannot open sqlite store at " << path << ": " << r.error().message());
    return std::move(r).value();
  }
  std::string uri() const { return "sqlite:" + path; }
};

#ifdef ANNALS_TEST_POSTGRES
// A fresh database on the ANNALS_TEST_PG server per test case, dropped at the end. Without
// ANNALS_TEST_PG the case FAILS (it never passes silently); a build that must not run the
// PostgreSQL cases is configured with -DANNALS_TEST_POSTGRES=OFF.
struct postgres_backend {
  std::string name, db_uri;

  postgres_backend() {
    std::string why;
    if (!pg::create_database(name, db_uri, why)) FAIL("no PostgreSQL for the test: " << why);
  }
  ~postgres_backend() {
    if (!name.empty()) pg::drop_database(name);
  }
  postgres_backend(const postgres_backend&) = delete;
  postgres_backend& operator=(const postgres_backend&) = delete;

  std::unique_ptr<event_store> open(const backend_options& o = {}) {
    postgres_options po;
    po.clock = o.clock;
    po.id_source = o.id_source;
    auto r = open_postgres_store(db_uri, std::move(po));
    if (!r) FAIL("cannot open PostgreSQL store at " << db_uri << ": " << r.error().message());
    return std::move(r).value();
  }
  std::string uri() const { return db_uri; }
};
#endif

// ---- result helpers -----------------------------------------------------------------------

template <class T>
std::string describe(const result<T>& r) {
  if (r.ok()) return "ok";
  return std::string(to_string(r.error().kind())) + ": " + r.error().message();
}

// The value of a result that must be a success; fails the test case (naming the error)
// otherwise.
template <class T>
T must(result<T> r) {
  if (!r) FAIL("unexpected error: " << describe(r));
  return std::move(r).value();
}
inline void must(result<void> r) {
  if (!r) FAIL("unexpected error: " << describe(r));
}

// The error kind of a result, or nullopt on success: CHECK(kind_of(r) == errc::x) prints both.
template <class T>
std::optional<errc> kind_of(const result<T>& r) {
  if (r.ok()) return std::nullopt;
  return r.error().kind();
}

// ---- events -------------------------------------------------------------------------------

inline event_data make_event(std::string type, std::string payload, std::string id = {}) {
  event_data e;
  e.event_id = std::move(id);
  e.type = std::move(type);
  e.payload = std::move(payload);
  return e;
}

// n events of type "test.v1.Thing" with payloads prefix0, prefix1, ...
inline std::vector<event_data> make_events(int n, const std::string& prefix = "p") {
  std::vector<event_data> out;
  for (int i = 0; i < n; ++i) out.push_back(make_event("test.v1.Thing", prefix + std::to_string(i)));
  return out;
}

// Fixed, distinct, valid UUID text for test event ids: uuid(1), uuid(2), ...
inline std::string uuid(std::uint64_t n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n));
  return buf;
}

// read_all_options, built fluently: query().from(4).max(3).types({"a.B"}).prefix("order-").
struct query {
  read_all_options o;
  query& from(std::int64_t position) { return o.from_position = position, *this; }
  query& max(std::int64_t n) { return o.max_count = n, *this; }
  query& types(std::vector<std::string> t) { return o.event_types = std::move(t), *this; }
  query& prefix(std::string p) { return o.stream_prefix = std::move(p), *this; }
  operator const read_all_options&() const { return o; }
};

inline std::vector<recorded_event> read_stream_vec(event_store& s, std::string_view stream,
                                                   read_stream_options o = {}) {
  std::vector<recorded_event> out;
  auto n = s.read_stream(stream, o, [&](const recorded_event& e) {
    out.push_back(e);
    return true;
  });
  if (!n) FAIL("read_stream failed: " << describe(n));
  CHECK(n.value() == static_cast<std::int64_t>(out.size()));
  return out;
}

inline std::vector<recorded_event> read_all_vec(event_store& s, read_all_options o = {}) {
  std::vector<recorded_event> out;
  auto n = s.read_all(o, [&](const recorded_event& e) {
    out.push_back(e);
    return true;
  });
  if (!n) FAIL("read_all failed: " << describe(n));
  CHECK(n.value() == static_cast<std::int64_t>(out.size()));
  return out;
}

// Checks the invariants every store must keep, whatever happened to it: positions 1..head
// without gaps in $all, and each stream's versions contiguous from 0 up to stream_version().
// Returns every event in position order.
inline std::vector<recorded_event> check_store_invariants(event_store& s) {
  auto all = read_all_vec(s);
  auto head = must(s.head_position());
  CHECK(head == static_cast<std::int64_t>(all.size()));
  std::map<std::string, std::int64_t> next_version;
  bool positions_ok = true, versions_ok = true;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i].position != static_cast<std::int64_t>(i) + 1) positions_ok = false;
    auto& nv = next_version[all[i].stream_id];
    if (all[i].stream_version != nv) versions_ok = false;
    nv = all[i].stream_version + 1;
  }
  CHECK_MESSAGE(positions_ok, "$all positions are not 1..head without gaps");
  CHECK_MESSAGE(versions_ok, "some stream's versions are not contiguous from 0 in $all order");
  for (const auto& entry : next_version) {
    CHECK_MESSAGE(must(s.stream_version(entry.first)) == entry.second - 1, "stream " << entry.first);
  }
  return all;
}

}  // namespace annals::test

TYPE_TO_STRING_AS("sqlite", annals::test::sqlite_backend);

// Every backend the conformance suite runs against.
#ifdef ANNALS_TEST_POSTGRES
TYPE_TO_STRING_AS("postgres", annals::test::postgres_backend);
#define ANNALS_STORE_BACKENDS annals::test::sqlite_backend, annals::test::postgres_backend
#else
#define ANNALS_STORE_BACKENDS annals::test::sqlite_backend
#endif
