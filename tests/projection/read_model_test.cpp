// Read models: Hana structs mapped to SQLite tables. Every supported member type round-trips
// (extreme values included) through upsert / find / select / erase; std::optional maps to NULL;
// the generated DDL has the right column types, NOT NULL and primary key; values are always
// bound, so hostile strings never break the SQL.
//
// Writes happen where a user's would: inside a projection handler. A tiny projection runs a
// script (a function set by the test) when it sees an AccountOpened event, and turns
// MoneyDeposited payloads into rows. Reads go through projection_runner::read().
#include <doctest/doctest.h>

#include <annals/event_store.hpp>
#include <annals/projection.hpp>
#include <annals/projection_runner.hpp>
#include <annals/read_model.hpp>
#include <annals/sql.hpp>

#include <boost/hana/define_struct.hpp>

#include "bank/v1/events.pb.h"
#include "support/support.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

using annals::blob;
using annals::errc;
using annals::result;
using annals::sql_row;
using annals::sql_tx;
namespace v1 = bank::v1;
using namespace std::string_literals;

// ---------------------------------------------------------------------------------------------
// Row types: every supported member type, plain and optional; a composite key declared in an
// order different from the members; SQL keywords as table and column names.

struct scalar_row {
  BOOST_HANA_DEFINE_STRUCT(scalar_row,
                           (std::string, id),
                           (bool, flag),
                           (std::int8_t, i8),
                           (std::int16_t, i16),
                           (std::int32_t, i32),
                           (std::int64_t, i64),
                           (std::uint8_t, u8),
                           (std::uint16_t, u16),
                           (std::uint32_t, u32),
                           (float, f32),
                           (double, f64),
                           (std::string, text),
                           (blob, bytes));
  static constexpr std::string_view table = "rm_scalars";
  static constexpr std::string_view key[] = {"id"};
  friend bool operator==(const scalar_row&, const scalar_row&) = default;
};

struct optional_row {
  BOOST_HANA_DEFINE_STRUCT(optional_row,
                           (std::string, id),
                           (std::optional<bool>, flag),
                           (std::optional<std::int8_t>, i8),
                           (std::optional<std::int16_t>, i16),
                           (std::optional<std::int32_t>, i32),
                           (std::optional<std::int64_t>, i64),
                           (std::optional<std::uint8_t>, u8),
                           (std::optional<std::uint16_t>, u16),
                           (std::optional<std::uint32_t>, u32),
                           (std::optional<float>, f32),
                           (std::optional<double>, f64),
                           (std::optional<std::string>, text),
                           (std::optional<blob>, bytes));
  static constexpr std::string_view table = "rm_optionals";
  static constexpr std::string_view key[] = {"id"};
  friend bool operator==(const optional_row&, const optional_row&) = default;
};

// Key (tenant, seq), members declared seq first: key arguments follow `key`, not the members.
struct composite_row {
  BOOST_HANA_DEFINE_STRUCT(composite_row,
                           (std::int64_t, seq),
                           (std::optional<std::string>, note),
                           (double, amount),
                           (std::string, tenant));
  static constexpr std::string_view table = "rm_composite";
  static constexpr std::string_view key[] = {"tenant", "seq"};
  friend bool operator==(const composite_row&, const composite_row&) = default;
};

// An integer key alone.
struct int_key_row {
  BOOST_HANA_DEFINE_STRUCT(int_key_row, (std::int64_t, position), (std::string, label));
  static constexpr std::string_view table = "rm_int_key";
  static constexpr std::string_view key[] = {"position"};
  friend bool operator==(const int_key_row&, const int_key_row&) = default;
};

// Table and columns named by SQL keywords: identifiers must be quoted in generated SQL.
struct keyword_row {
  BOOST_HANA_DEFINE_STRUCT(keyword_row,
                           (std::int64_t, select),
                           (std::string, from),
                           (std::optional<std::string>, where));
  static constexpr std::string_view table = "order";
  static constexpr std::string_view key[] = {"select"};
  friend bool operator==(const keyword_row&, const keyword_row&) = default;
};

// ---------------------------------------------------------------------------------------------
// Printing rows in failure messages.

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class T>
void put(std::ostream& o, const T& v) {
  if constexpr (is_optional<T>::value) {
    if (!v) {
      o << "NULL";
    } else {
      put(o, *v);
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    o << (v ? "true" : "false");
  } else if constexpr (std::is_integral_v<T>) {
    o << +v;
  } else if constexpr (std::is_floating_point_v<T>) {
    o << std::hexfloat << v << std::defaultfloat;
  } else if constexpr (std::is_same_v<T, std::string>) {
    o << '"';
    for (unsigned char c : v) {
      if (c >= 0x20 && c < 0x7f && c != '\\') {
        o << c;
      } else {
        o << "\\x" << std::hex << std::setw(2) << std::setfill('0') << int{c} << std::dec;
      }
    }
    o << '"';
  } else {
    o << "blob(";
    put(o, v.bytes);
    o << ")";
  }
}

template <class Row>
std::string dump(const Row& row) {
  std::ostringstream o;
  o << "{";
  boost::hana::for_each(boost::hana::accessors<Row>(), [&](auto pair) {
    o << " " << boost::hana::to<const char*>(boost::hana::first(pair)) << "=";
    put(o, boost::hana::second(pair)(row));
  });
  o << " }";
  return o.str();
}

template <class T>
std::string kind_of(const result<T>& r) {
  return r.ok() ? "ok" : std::string(annals::to_string(r.error().kind()));
}
template <class T>
std::string message_of(const result<T>& r) {
  return r.ok() ? "ok" : r.error().message();
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// tx.table() gives the physical name quoted for SQL; sqlite_schema and pragma_table_info
// want it bare.
std::string unquoted(std::string q) {
  if (q.size() >= 2 && (q.front() == '"' || q.front() == '`' || q.front() == '[')) {
    std::string out;
    char close = q.front() == '[' ? ']' : q.front();
    for (std::size_t i = 1; i + 1 < q.size(); ++i) {
      out += q[i];
      if (q[i] == close && q[i + 1] == close) ++i;
    }
    return out;
  }
  return q;
}

// ---------------------------------------------------------------------------------------------
// The harness: a projection whose handlers do what the test says, and a runner to drive it.

using script = std::function<result<void>(sql_tx&)>;
struct script_slot {
  script fn;
  int runs = 0;
};

struct rm_projection {
  static constexpr std::string_view name = "rm_harness";
  static constexpr int version = 1;
  using events = annals::event_list<v1::AccountOpened, v1::MoneyDeposited>;
  using tables =
      annals::table_list<scalar_row, optional_row, composite_row, int_key_row, keyword_row>;

  std::shared_ptr<script_slot> slot;

  // Runs the test's script in the projection's write transaction.
  result<void> handle(const v1::AccountOpened&, const annals::recorded_event&, sql_tx& tx) {
    ++slot->runs;
    if (!slot->fn) return {};
    return slot->fn(tx);
  }
  // A row built from an event payload: the key is the account id, i64 the amount.
  result<void> handle(const v1::MoneyDeposited& e, const annals::recorded_event& meta,
                      sql_tx& tx) {
    scalar_row r{};
    r.id = e.account_id();
    r.i64 = e.amount_cents();
    r.text = meta.stream_id;
    r.u32 = static_cast<std::uint32_t>(meta.stream_version);
    r.f64 = static_cast<double>(meta.position);
    r.bytes = blob{e.account_id()};
    return tx.upsert(r);
  }
};

annals::event_data data_of(const google::protobuf::Message& m) {
  annals::event_data d;
  d.type = m.GetDescriptor()->full_name();
  d.payload = m.SerializeAsString();
  return d;
}

struct harness {
  annals::test::temp_dir dir;
  std::string path = dir.file("rm.db");
  std::unique_ptr<annals::event_store> store;
  std::shared_ptr<script_slot> slot = std::make_shared<script_slot>();
  std::unique_ptr<annals::projection_runner> runner;

  harness() {
    auto s = annals::open_sqlite_store(path);
    REQUIRE_MESSAGE(s.ok(), message_of(s));
    store = std::move(s).value();
    annals::runner_options o;
    o.max_attempts = 1;  // a failing script parks at once: the test reads the error
    o.retry_backoff = std::chrono::milliseconds(1);
    auto r = annals::projection_runner::open(
        path, {annals::make_projection(rm_projection{slot})}, o);
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    runner = std::move(r).value();
  }

  void append(const std::string& stream, const google::protobuf::Message& m) {
    auto r = store->append(stream, annals::expected_version::any(), {data_of(m)});
    REQUIRE_MESSAGE(r.ok(), message_of(r));
  }

  void catch_up() {
    auto r = runner->catch_up();
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    auto st = runner->status();
    REQUIRE_MESSAGE(st.ok(), message_of(st));
    REQUIRE(st->size() == 1);
    const auto& s = st->front();
    REQUIRE_MESSAGE(s.parked == 0, "the projection is stuck: " << s.error);
    REQUIRE(s.checkpoint == s.head);
  }

  // Runs fn inside the projection's handler: a write transaction on the read models.
  void write(script fn) {
    slot->fn = std::move(fn);
    const int before = slot->runs;
    v1::AccountOpened e;
    e.set_account_id("script");
    append("script", e);
    catch_up();
    REQUIRE(slot->runs == before + 1);
    slot->fn = nullptr;
  }

  // Runs fn in a read transaction.
  void read(const std::function<result<void>(sql_tx&)>& fn) {
    auto r = runner->read(fn);
    REQUIRE_MESSAGE(r.ok(), message_of(r));
  }

  template <class Row, class... Key>
  std::optional<Row> find(const Key&... key) {
    std::optional<Row> out;
    read([&](sql_tx& tx) -> result<void> {
      auto r = tx.find<Row>(key...);
      if (!r) return std::move(r).error();
      out = std::move(r).value();
      return {};
    });
    return out;
  }

  template <class Row>
  std::vector<Row> all(std::string_view where = {}, annals::sql_params params = {},
                       std::string_view order_by = {}) {
    std::vector<Row> out;
    read([&](sql_tx& tx) -> result<void> {
      auto r = tx.select<Row>(
          where, params,
          [&](const Row& row) {
            out.push_back(row);
            return true;
          },
          order_by);
      if (!r) return std::move(r).error();
      CHECK(*r == static_cast<std::int64_t>(out.size()));
      return {};
    });
    return out;
  }

  // One query, each row's columns as text (NULL as "NULL"); in a read transaction.
  std::vector<std::vector<std::string>> query(const std::string& sql,
                                              std::vector<annals::sql_value> params = {}) {
    std::vector<std::vector<std::string>> rows;
    read([&](sql_tx& tx) -> result<void> {
      auto r = tx.query(sql, params.data(), params.size(), [&](const sql_row& row) {
        std::vector<std::string> cols;
        for (int i = 0; i < row.columns(); ++i) {
          cols.push_back(row.is_null(i) ? "NULL" : row.text(i));
        }
        rows.push_back(std::move(cols));
        return true;
      });
      if (!r) return std::move(r).error();
      return {};
    });
    return rows;
  }

  std::string physical(std::string_view logical) {
    std::string name;
    read([&](sql_tx& tx) -> result<void> {
      name = unquoted(tx.table(logical));
      return {};
    });
    return name;
  }
};

result<void> upsert_all(sql_tx& tx, const std::vector<scalar_row>& rows) {
  for (const auto& r : rows) {
    auto u = tx.upsert(r);
    if (!u) return u;
  }
  return {};
}

// Values at the edges of every type.
std::vector<scalar_row> extreme_scalars() {
  using f = std::numeric_limits<float>;
  using d = std::numeric_limits<double>;
  std::vector<scalar_row> rows;
  {
    scalar_row r{};
    r.id = "max";
    r.flag = true;
    r.i8 = std::numeric_limits<std::int8_t>::max();
    r.i16 = std::numeric_limits<std::int16_t>::max();
    r.i32 = std::numeric_limits<std::int32_t>::max();
    r.i64 = std::numeric_limits<std::int64_t>::max();
    r.u8 = std::numeric_limits<std::uint8_t>::max();
    r.u16 = std::numeric_limits<std::uint16_t>::max();
    r.u32 = std::numeric_limits<std::uint32_t>::max();
    r.f32 = f::max();
    r.f64 = d::max();
    r.text = "nul\0inside\0"s;
    r.bytes = blob{"\0\x01\xff\0tail\0"s};
    rows.push_back(r);
  }
  {
    scalar_row r{};
    r.id = "min";
    r.flag = false;
    r.i8 = std::numeric_limits<std::int8_t>::min();
    r.i16 = std::numeric_limits<std::int16_t>::min();
    r.i32 = std::numeric_limits<std::int32_t>::min();
    r.i64 = std::numeric_limits<std::int64_t>::min();
    r.u8 = 0;
    r.u16 = 0;
    r.u32 = 0;
    r.f32 = f::lowest();
    r.f64 = d::lowest();
    r.text = "";
    r.bytes = blob{};
    rows.push_back(r);
  }
  {
    scalar_row r{};
    r.id = "infinities";
    r.flag = true;
    r.i8 = -1;
    r.i16 = -1;
    r.i32 = -1;
    r.i64 = -1;
    r.u8 = 1;
    r.u16 = 1;
    r.u32 = 1;
    r.f32 = f::infinity();
    r.f64 = -d::infinity();
    r.text = "O'Brien said \"hi\"; DROP TABLE rm_scalars; --";
    r.bytes = blob{"'\"\\"};
    rows.push_back(r);
  }
  {
    scalar_row r{};
    r.id = "denormals";
    r.flag = false;
    r.i8 = 1;
    r.i16 = 300;
    r.i32 = 70000;
    r.i64 = std::int64_t{1} << 53 | 1;  // not exactly representable as a double
    r.u8 = 128;
    r.u16 = 32768;
    r.u32 = 2147483648u;  // above INT32_MAX
    r.f32 = f::denorm_min();
    r.f64 = d::denorm_min();
    r.text = "Zo\xc3\xab \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x99\x82";
    r.bytes = blob{std::string(300, '\0')};
    rows.push_back(r);
  }
  {
    scalar_row r{};
    r.id = "fractions";
    r.flag = true;
    r.f32 = -1.5f;
    r.f64 = 0.1;
    r.text = std::string(100000, 'x');
    std::string all_bytes;
    for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
    r.bytes = blob{all_bytes};
    rows.push_back(r);
  }
  {
    scalar_row r{};
    r.id = "small floats";
    r.f32 = f::min();  // smallest normal
    r.f64 = d::min();
    r.text = "-inf";
    rows.push_back(r);
  }
  return rows;
}

void check_rows_equal(const std::vector<scalar_row>& got, const std::vector<scalar_row>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK_MESSAGE(got[i] == want[i], "got  " << dump(got[i]) << "\nwant " << dump(want[i]));
  }
}

std::vector<scalar_row> sorted_by_id(std::vector<scalar_row> rows) {
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return rows;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Every supported member type

TEST_CASE("every supported member type round-trips its extreme values through upsert and find") {
  harness h;
  const auto rows = extreme_scalars();
  h.write([&](sql_tx& tx) { return upsert_all(tx, rows); });

  for (const auto& want : rows) {
    CAPTURE(want.id);
    auto got = h.find<scalar_row>(want.id);
    REQUIRE(got.has_value());
    CHECK_MESSAGE(*got == want, "got  " << dump(*got) << "\nwant " << dump(want));
  }
  // The same through select, with an empty where: every row, in key order.
  check_rows_equal(h.all<scalar_row>(), sorted_by_id(rows));

  // Inside the write transaction too: a handler reads back what it wrote.
  h.write([&](sql_tx& tx) -> result<void> {
    for (const auto& want : rows) {
      auto got = tx.find<scalar_row>(want.id);
      REQUIRE_MESSAGE(got.ok(), message_of(got));
      REQUIRE(got->has_value());
      CHECK_MESSAGE(**got == want, "got  " << dump(**got) << "\nwant " << dump(want));
    }
    return {};
  });
}

TEST_CASE("values are stored with their natural SQLite storage class and exact value") {
  harness h;
  const auto rows = extreme_scalars();
  h.write([&](sql_tx& tx) { return upsert_all(tx, rows); });
  const auto t = "\"" + h.physical("rm_scalars") + "\"";

  // Every column's storage class, for every row.
  auto classes = h.query(
      "SELECT id, typeof(flag), typeof(i8), typeof(i16), typeof(i32), typeof(i64), typeof(u8), "
      "typeof(u16), typeof(u32), typeof(f32), typeof(f64), typeof(text), typeof(bytes) FROM " +
      t + " ORDER BY id");
  REQUIRE(classes.size() == rows.size());
  for (const auto& c : classes) {
    CAPTURE(c[0]);
    for (int i = 1; i <= 8; ++i) CHECK(c[i] == "integer");
    CHECK(c[9] == "real");
    CHECK(c[10] == "real");
    CHECK(c[11] == "text");
    CHECK(c[12] == "blob");
  }

  // Unsigned values are stored as their positive value, signed ones with their sign; strings
  // and blobs with every byte, NULs included.
  auto max = h.query("SELECT u32, u16, u8, i64, length(CAST(text AS BLOB)), length(bytes), "
                     "hex(bytes) FROM " + t + " WHERE id = ?1",
                     {"max"});
  REQUIRE(max.size() == 1);
  CHECK(max[0][0] == "4294967295");
  CHECK(max[0][1] == "65535");
  CHECK(max[0][2] == "255");
  CHECK(max[0][3] == "9223372036854775807");
  CHECK(max[0][4] == std::to_string(("nul\0inside\0"s).size()));
  CHECK(max[0][5] == "9");
  CHECK(max[0][6] == "0001FF007461696C00");
  auto min = h.query("SELECT i64, i8, length(bytes), typeof(bytes) FROM " + t + " WHERE id = ?1",
                     {"min"});
  REQUIRE(min.size() == 1);
  CHECK(min[0][0] == "-9223372036854775808");
  CHECK(min[0][1] == "-128");
  CHECK(min[0][2] == "0");  // an empty blob is a zero-length blob, not NULL
  CHECK(min[0][3] == "blob");
  auto big = h.query("SELECT u32, i64 FROM " + t + " WHERE id = ?1", {"denormals"});
  REQUIRE(big.size() == 1);
  CHECK(big[0][0] == "2147483648");
  CHECK(big[0][1] == "9007199254740993");

  // sql_row's typed accessors on the same values.
  h.read([&](sql_tx& tx) -> result<void> {
    std::int64_t n = 0;
    auto r = tx.query("SELECT i64, f64, text, bytes FROM " + t + " WHERE id = ?1", {"max"},
                      [&](const sql_row& row) {
                        ++n;
                        CHECK(row.columns() == 4);
                        CHECK(row.int64(0) == std::numeric_limits<std::int64_t>::max());
                        CHECK(row.real(1) == std::numeric_limits<double>::max());
                        CHECK(row.text(2) == "nul\0inside\0"s);
                        CHECK(row.text_view(2) == "nul\0inside\0"s);
                        CHECK(row.bytes(3) == blob{"\0\x01\xff\0tail\0"s});
                        CHECK_FALSE(row.is_null(0));
                        return true;
                      });
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    CHECK(*r == 1);
    CHECK(n == 1);
    return {};
  });
}

TEST_CASE("optional members map to NULL when empty and to their value when set") {
  harness h;
  optional_row empty{};
  empty.id = "empty";
  optional_row set{};
  set.id = "set";
  set.flag = false;  // set to the "zero" of each type: still not NULL
  set.i8 = 0;
  set.i16 = 0;
  set.i32 = 0;
  set.i64 = 0;
  set.u8 = 0;
  set.u16 = 0;
  set.u32 = 0;
  set.f32 = 0.0f;
  set.f64 = 0.0;
  set.text = "";
  set.bytes = blob{};
  optional_row extreme{};
  extreme.id = "extreme";
  extreme.flag = true;
  extreme.i8 = std::numeric_limits<std::int8_t>::min();
  extreme.i16 = std::numeric_limits<std::int16_t>::min();
  extreme.i32 = std::numeric_limits<std::int32_t>::min();
  extreme.i64 = std::numeric_limits<std::int64_t>::min();
  extreme.u8 = std::numeric_limits<std::uint8_t>::max();
  extreme.u16 = std::numeric_limits<std::uint16_t>::max();
  extreme.u32 = std::numeric_limits<std::uint32_t>::max();
  extreme.f32 = -std::numeric_limits<float>::infinity();
  extreme.f64 = std::numeric_limits<double>::denorm_min();
  extreme.text = "\0'\"\xf0\x9f\x99\x82"s;
  extreme.bytes = blob{"\0\0"s};

  h.write([&](sql_tx& tx) -> result<void> {
    for (const auto* r : {&empty, &set, &extreme}) {
      auto u = tx.upsert(*r);
      if (!u) return u;
    }
    return {};
  });

  for (const auto* want : {&empty, &set, &extreme}) {
    CAPTURE(want->id);
    auto got = h.find<optional_row>(want->id);
    REQUIRE(got.has_value());
    CHECK_MESSAGE(*got == *want, "got  " << dump(*got) << "\nwant " << dump(*want));
  }

  const auto t = "\"" + h.physical("rm_optionals") + "\"";
  const std::string cols =
      "flag, i8, i16, i32, i64, u8, u16, u32, f32, f64, text, bytes";
  auto nulls = h.query("SELECT " + cols + " FROM " + t + " WHERE id = ?1", {"empty"});
  REQUIRE(nulls.size() == 1);
  for (const auto& c : nulls[0]) CHECK(c == "NULL");
  auto set_classes = h.query(
      "SELECT typeof(flag), typeof(i64), typeof(u32), typeof(f64), typeof(text), typeof(bytes) "
      "FROM " + t + " WHERE id = ?1",
      {"set"});
  REQUIRE(set_classes.size() == 1);
  CHECK(set_classes[0] ==
        std::vector<std::string>{"integer", "integer", "integer", "real", "text", "blob"});

  // A set value can be cleared to NULL by an upsert, and set again.
  optional_row cleared = extreme;
  cleared.i64.reset();
  cleared.text.reset();
  cleared.bytes.reset();
  h.write([&](sql_tx& tx) { return tx.upsert(cleared); });
  auto got = h.find<optional_row>("extreme");
  REQUIRE(got.has_value());
  CHECK_MESSAGE(*got == cleared, dump(*got));
  CHECK(h.query("SELECT count(*) FROM " + t + " WHERE text IS NULL AND bytes IS NULL")[0][0] ==
        "2");
}

TEST_CASE("the generated DDL has one typed column per member, NOT NULL unless optional, and "
          "the declared primary key") {
  harness h;
  struct col {
    std::string type;
    int notnull;
    int pk;
  };
  auto columns_of = [&](std::string_view logical) {
    const auto name = h.physical(logical);
    auto kind = h.query("SELECT type FROM sqlite_schema WHERE name = ?1", {name});
    REQUIRE_MESSAGE(kind.size() == 1, "no table " << name << " in sqlite_schema");
    CHECK(kind[0][0] == "table");
    std::map<std::string, col> out;
    for (const auto& r : h.query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)",
                                 {name})) {
      out[r[0]] = col{upper(r[1]), std::stoi(r[2]), std::stoi(r[3])};
    }
    return out;
  };
  auto check = [](const std::map<std::string, col>& got, const std::string& name,
                  const std::string& type, bool notnull, int pk) {
    CAPTURE(name);
    auto it = got.find(name);
    REQUIRE(it != got.end());
    CHECK(it->second.type == type);
    CHECK(it->second.notnull == (notnull ? 1 : 0));
    CHECK(it->second.pk == pk);
  };

  auto scalars = columns_of("rm_scalars");
  CHECK(scalars.size() == 13);
  check(scalars, "id", "TEXT", true, 1);
  for (auto name : {"flag", "i8", "i16", "i32", "i64", "u8", "u16", "u32"}) {
    check(scalars, name, "INTEGER", true, 0);
  }
  check(scalars, "f32", "REAL", true, 0);
  check(scalars, "f64", "REAL", true, 0);
  check(scalars, "text", "TEXT", true, 0);
  check(scalars, "bytes", "BLOB", true, 0);

  auto optionals = columns_of("rm_optionals");
  CHECK(optionals.size() == 13);
  check(optionals, "id", "TEXT", true, 1);
  for (auto name : {"flag", "i8", "i16", "i32", "i64", "u8", "u16", "u32"}) {
    check(optionals, name, "INTEGER", false, 0);
  }
  check(optionals, "f32", "REAL", false, 0);
  check(optionals, "f64", "REAL", false, 0);
  check(optionals, "text", "TEXT", false, 0);
  check(optionals, "bytes", "BLOB", false, 0);

  // The primary key is (tenant, seq) in that order, whatever the order of the members.
  auto composite = columns_of("rm_composite");
  CHECK(composite.size() == 4);
  check(composite, "tenant", "TEXT", true, 1);
  check(composite, "seq", "INTEGER", true, 2);
  check(composite, "note", "TEXT", false, 0);
  check(composite, "amount", "REAL", true, 0);

  auto int_key = columns_of("rm_int_key");
  CHECK(int_key.size() == 2);
  check(int_key, "position", "INTEGER", true, 1);
  check(int_key, "label", "TEXT", true, 0);

  auto keywords = columns_of("order");
  CHECK(keywords.size() == 3);
  check(keywords, "select", "INTEGER", true, 1);
  check(keywords, "from", "TEXT", true, 0);
  check(keywords, "where", "TEXT", false, 0);
}

// ---------------------------------------------------------------------------------------------
// upsert, erase, find, select

TEST_CASE("upsert replaces the row with the same key and never duplicates it") {
  harness h;
  auto rows = extreme_scalars();
  h.write([&](sql_tx& tx) { return upsert_all(tx, rows); });

  scalar_row replacement{};
  replacement.id = "max";  // same key, every other value changed
  replacement.flag = false;
  replacement.i8 = 7;
  replacement.i64 = -42;
  replacement.u32 = 17;
  replacement.f64 = 2.5;
  replacement.text = "replaced";
  replacement.bytes = blob{"r"};
  h.write([&](sql_tx& tx) -> result<void> {
    // Twice in one transaction, and the second write wins.
    scalar_row first = replacement;
    first.text = "first";
    if (auto u = tx.upsert(first); !u) return u;
    return tx.upsert(replacement);
  });
  auto got = h.find<scalar_row>("max");
  REQUIRE(got.has_value());
  CHECK_MESSAGE(*got == replacement, dump(*got));
  CHECK(h.all<scalar_row>().size() == rows.size());
  // The other rows are untouched.
  for (const auto& want : rows) {
    if (want.id == "max") continue;
    CAPTURE(want.id);
    auto other = h.find<scalar_row>(want.id);
    REQUIRE(other.has_value());
    CHECK(*other == want);
  }

  // Composite keys: a row is replaced only when both parts match.
  h.write([&](sql_tx& tx) -> result<void> {
    for (auto [tenant, seq] : std::initializer_list<std::pair<const char*, int>>{
             {"t1", 1}, {"t1", 2}, {"t2", 1}}) {
      composite_row r{seq, std::nullopt, 1.0, tenant};
      if (auto u = tx.upsert(r); !u) return u;
    }
    return tx.upsert(composite_row{2, "second", 9.5, "t1"});
  });
  auto composite = h.all<composite_row>();
  REQUIRE(composite.size() == 3);
  // Default order: by key (tenant, seq).
  CHECK(composite[0] == composite_row{1, std::nullopt, 1.0, "t1"});
  CHECK(composite[1] == composite_row{2, "second", 9.5, "t1"});
  CHECK(composite[2] == composite_row{1, std::nullopt, 1.0, "t2"});
}

TEST_CASE("erase deletes by key and reports whether a row was there, and find of a missing key is "
          "empty") {
  harness h;
  auto rows = extreme_scalars();
  h.write([&](sql_tx& tx) -> result<void> {
    if (auto u = upsert_all(tx, rows); !u) return u;
    for (auto [tenant, seq] : std::initializer_list<std::pair<const char*, int>>{
             {"a", 1}, {"a", 2}, {"b", 1}}) {
      if (auto u = tx.upsert(composite_row{seq, tenant, 0.5, tenant}); !u) return u;
    }
    return tx.upsert(int_key_row{42, "answer"});
  });

  h.write([&](sql_tx& tx) -> result<void> {
    auto first = tx.erase<scalar_row>("max");
    REQUIRE_MESSAGE(first.ok(), message_of(first));
    CHECK(*first == true);
    auto again = tx.erase<scalar_row>("max");
    REQUIRE_MESSAGE(again.ok(), message_of(again));
    CHECK(*again == false);
    auto never = tx.erase<scalar_row>("never there");
    REQUIRE(never.ok());
    CHECK(*never == false);
    // Gone inside the transaction already.
    auto found = tx.find<scalar_row>("max");
    REQUIRE(found.ok());
    CHECK_FALSE(found->has_value());

    // Composite: both key parts, in `key` order (tenant, seq).
    auto c = tx.erase<composite_row>(std::string("a"), std::int64_t{2});
    REQUIRE_MESSAGE(c.ok(), message_of(c));
    CHECK(*c == true);
    auto c_again = tx.erase<composite_row>(std::string("a"), std::int64_t{2});
    REQUIRE(c_again.ok());
    CHECK(*c_again == false);
    auto wrong_part = tx.erase<composite_row>(std::string("b"), std::int64_t{2});
    REQUIRE(wrong_part.ok());
    CHECK(*wrong_part == false);

    auto i = tx.erase<int_key_row>(std::int64_t{43});
    REQUIRE(i.ok());
    CHECK(*i == false);
    return {};
  });

  CHECK_FALSE(h.find<scalar_row>("max").has_value());
  CHECK_FALSE(h.find<scalar_row>("").has_value());
  CHECK_FALSE(h.find<scalar_row>("MAX").has_value());  // keys compare exactly
  CHECK(h.find<scalar_row>("min").has_value());
  CHECK(h.all<scalar_row>().size() == rows.size() - 1);

  CHECK_FALSE(h.find<composite_row>(std::string("a"), std::int64_t{2}).has_value());
  auto a1 = h.find<composite_row>(std::string("a"), std::int64_t{1});
  REQUIRE(a1.has_value());
  CHECK(*a1 == composite_row{1, "a", 0.5, "a"});
  CHECK_FALSE(h.find<composite_row>(std::string("c"), std::int64_t{1}).has_value());
  CHECK(h.all<composite_row>().size() == 2);

  auto answer = h.find<int_key_row>(std::int64_t{42});
  REQUIRE(answer.has_value());
  CHECK(answer->label == "answer");
  CHECK_FALSE(h.find<int_key_row>(std::int64_t{-42}).has_value());

  // Erase the last rows: the table is empty, not gone.
  h.write([&](sql_tx& tx) -> result<void> {
    auto e = tx.erase<int_key_row>(std::int64_t{42});
    REQUIRE(e.ok());
    CHECK(*e == true);
    return {};
  });
  CHECK(h.all<int_key_row>().empty());
  CHECK_FALSE(h.find<int_key_row>(std::int64_t{42}).has_value());
}

TEST_CASE("select filters with bound parameters, orders as asked and stops when told") {
  harness h;
  h.write([&](sql_tx& tx) -> result<void> {
    for (std::int64_t i = 0; i < 20; ++i) {
      composite_row r{i, i % 3 == 0 ? std::optional<std::string>() : "n" + std::to_string(i),
                      static_cast<double>(i) / 4, i % 2 == 0 ? "even" : "odd"};
      if (auto u = tx.upsert(r); !u) return u;
    }
    return {};
  });

  // Empty where: all rows, by key (tenant, seq).
  auto all = h.all<composite_row>();
  REQUIRE(all.size() == 20);
  for (std::size_t i = 0; i < all.size(); ++i) {
    CAPTURE(i);
    CHECK(all[i].tenant == (i < 10 ? "even" : "odd"));
    CHECK(all[i].seq == static_cast<std::int64_t>(i < 10 ? 2 * i : 2 * (i - 10) + 1));
  }

  // Two parameters, reversed order.
  auto some = h.all<composite_row>("tenant = ?1 AND seq >= ?2", {"odd", 11}, "seq DESC");
  REQUIRE(some.size() == 5);
  std::vector<std::int64_t> seqs;
  for (const auto& r : some) seqs.push_back(r.seq);
  CHECK(seqs == std::vector<std::int64_t>{19, 17, 15, 13, 11});

  // NULL tests and a real-valued parameter.
  auto nulls = h.all<composite_row>("note IS NULL AND amount > ?1", {1.0}, "amount");
  std::vector<std::int64_t> null_seqs;
  for (const auto& r : nulls) {
    null_seqs.push_back(r.seq);
    CHECK_FALSE(r.note.has_value());
  }
  CHECK(null_seqs == std::vector<std::int64_t>{6, 9, 12, 15, 18});

  // Nothing matches: zero rows, not an error.
  CHECK(h.all<composite_row>("tenant = ?1", {"nobody"}).empty());

  // The visitor stops the query by returning false; the count says how many it saw.
  h.read([&](sql_tx& tx) -> result<void> {
    int seen = 0;
    auto r = tx.select<composite_row>(
        "", {},
        [&](const composite_row&) {
          ++seen;
          return seen < 3;
        },
        "seq DESC, tenant");
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    CHECK(seen == 3);
    CHECK(*r == 3);
    return {};
  });

  // A parameter is a value, never SQL: a hostile value matches nothing and breaks nothing.
  CHECK(h.all<composite_row>("tenant = ?1", {"odd' OR '1'='1"}).empty());
  CHECK(h.all<composite_row>("tenant = ?1", {"odd\" OR 1=1 --"}).empty());
  CHECK(h.all<composite_row>().size() == 20);
}

TEST_CASE("hostile strings as keys and values are stored and found exactly, never run as SQL") {
  harness h;
  const std::vector<std::string> hostile = {
      "'",
      "''",
      "\"",
      "'; DROP TABLE rm_scalars; --",
      "\"); DELETE FROM rm_scalars; --",
      "?1",
      ":name @x $y",
      "%_*",
      "\\",
      "a\0b"s,
      "\0"s,
      "\n\r\t",
      "\xe2\x80\x8b zero width",
      "\xf0\x9f\x92\xa3",
      "NULL",
      "",
  };
  h.write([&](sql_tx& tx) -> result<void> {
    for (std::size_t i = 0; i < hostile.size(); ++i) {
      scalar_row r{};
      r.id = hostile[i];
      r.i64 = static_cast<std::int64_t>(i);
      r.text = hostile[hostile.size() - 1 - i];
      r.bytes = blob{hostile[i]};
      if (auto u = tx.upsert(r); !u) return u;
    }
    // Hostile text in the keyword table, keys and values.
    for (std::size_t i = 0; i < hostile.size(); ++i) {
      keyword_row r{static_cast<std::int64_t>(i), hostile[i],
                    i % 2 ? std::optional<std::string>(hostile[i]) : std::nullopt};
      if (auto u = tx.upsert(r); !u) return u;
    }
    return {};
  });

  // Every row is there, distinct: "a\0b" is not "a", "\0" is not "".
  auto all = h.all<scalar_row>();
  CHECK(all.size() == hostile.size());
  std::set<std::string> ids;
  for (const auto& r : all) ids.insert(r.id);
  CHECK(ids == std::set<std::string>(hostile.begin(), hostile.end()));
  CHECK_FALSE(h.find<scalar_row>("a"s).has_value());

  for (std::size_t i = 0; i < hostile.size(); ++i) {
    CAPTURE(i);
    auto got = h.find<scalar_row>(hostile[i]);
    REQUIRE(got.has_value());
    CHECK(got->id == hostile[i]);
    CHECK(got->i64 == static_cast<std::int64_t>(i));
    CHECK(got->text == hostile[hostile.size() - 1 - i]);
    CHECK(got->bytes.bytes == hostile[i]);
    // As a parameter of a select, it matches exactly its own row.
    auto by_text = h.all<scalar_row>("text = ?1", {hostile[hostile.size() - 1 - i]});
    REQUIRE(by_text.size() == 1);
    CHECK(by_text[0].id == hostile[i]);
    // And as a parameter of a raw query.
    auto echoed = h.query("SELECT ?1, length(CAST(?1 AS BLOB))", {hostile[i]});
    REQUIRE(echoed.size() == 1);
    CHECK(echoed[0][1] == std::to_string(hostile[i].size()));
  }

  auto kw = h.all<keyword_row>();
  REQUIRE(kw.size() == hostile.size());
  for (std::size_t i = 0; i < kw.size(); ++i) {
    CAPTURE(i);
    CHECK(kw[i].select == static_cast<std::int64_t>(i));
    CHECK(kw[i].from == hostile[i]);
    CHECK(kw[i].where == (i % 2 ? std::optional<std::string>(hostile[i]) : std::nullopt));
  }

  // Erase by hostile keys: exactly the row named, once.
  h.write([&](sql_tx& tx) -> result<void> {
    for (const auto& k : {hostile[3], hostile[9], hostile[15]}) {
      auto e = tx.erase<scalar_row>(k);
      REQUIRE(e.ok());
      CHECK(*e == true);
      auto again = tx.erase<scalar_row>(k);
      REQUIRE(again.ok());
      CHECK(*again == false);
    }
    return {};
  });
  CHECK(h.all<scalar_row>().size() == hostile.size() - 3);
  CHECK(h.find<scalar_row>("\0"s).has_value());
  CHECK_FALSE(h.find<scalar_row>("a\0b"s).has_value());
}

TEST_CASE("rows built from event payloads: keys and values from the event and its metadata") {
  harness h;
  struct dep {
    std::string account;
    std::int64_t cents;
  };
  const std::vector<dep> deps = {
      {"plain", 1},
      {"'; DROP TABLE rm_scalars; --", std::numeric_limits<std::int64_t>::max()},
      {"\"quoted\"", std::numeric_limits<std::int64_t>::min()},
      {"\xc3\xa9t\xc3\xa9 \xf0\x9f\x8c\x9e", -1},
      {"nul\0byte"s, 0},
  };
  std::map<std::string, std::int64_t> position_of;
  for (const auto& d : deps) {
    v1::MoneyDeposited e;
    e.set_account_id(d.account);
    e.set_amount_cents(d.cents);
    auto r = h.store->append("deposits-" + std::to_string(position_of.size()),
                             annals::expected_version::any(), {data_of(e)});
    REQUIRE(r.ok());
    position_of[d.account] = r->position;
  }
  h.catch_up();
  CHECK(h.all<scalar_row>().size() == deps.size());
  for (std::size_t i = 0; i < deps.size(); ++i) {
    const auto& d = deps[i];
    CAPTURE(i);
    auto got = h.find<scalar_row>(d.account);
    REQUIRE(got.has_value());
    CHECK(got->i64 == d.cents);
    CHECK(got->text == "deposits-" + std::to_string(i));
    CHECK(got->u32 == 0u);  // stream version of the only event of its stream
    CHECK(got->f64 == static_cast<double>(position_of[d.account]));
    CHECK(got->bytes.bytes == d.account);
  }
  // A second deposit for the same account replaces its row.
  v1::MoneyDeposited again;
  again.set_account_id("plain");
  again.set_amount_cents(77);
  auto r = h.store->append("deposits-0", annals::expected_version::exact(0), {data_of(again)});
  REQUIRE(r.ok());
  h.catch_up();
  auto plain = h.find<scalar_row>("plain");
  REQUIRE(plain.has_value());
  CHECK(plain->i64 == 77);
  CHECK(plain->u32 == 1u);
  CHECK(plain->f64 == static_cast<double>(r->position));
  CHECK(h.all<scalar_row>().size() == deps.size());
}

// ---------------------------------------------------------------------------------------------
// Custom SQL and the read transaction

TEST_CASE("handlers run custom SQL on their own tables through tx.table()") {
  harness h;
  h.write([&](sql_tx& tx) -> result<void> {
    for (std::int64_t i = 1; i <= 5; ++i) {
      if (auto u = tx.upsert(int_key_row{i, "row " + std::to_string(i)}); !u) return u;
    }
    auto changed = tx.exec("UPDATE " + tx.table("rm_int_key") +
                               " SET label = label || ?1 WHERE position > ?2",
                           {"!", 3});
    REQUIRE_MESSAGE(changed.ok(), message_of(changed));
    CHECK(*changed == 2);
    auto none = tx.exec("DELETE FROM " + tx.table("rm_int_key") + " WHERE label = ?1",
                        {"row 1' OR '1'='1"});
    REQUIRE(none.ok());
    CHECK(*none == 0);
    std::int64_t sum = 0;
    auto q = tx.query("SELECT sum(position) FROM " + tx.table("rm_int_key"), {},
                      [&](const sql_row& r) {
                        sum = r.int64(0);
                        return true;
                      });
    REQUIRE(q.ok());
    CHECK(sum == 15);
    return {};
  });
  auto rows = h.all<int_key_row>();
  REQUIRE(rows.size() == 5);
  CHECK(rows[2].label == "row 3");
  CHECK(rows[3].label == "row 4!");
  CHECK(rows[4].label == "row 5!");

  // A failing statement is an error value, not an exception, and names no row.
  h.write([&](sql_tx& tx) -> result<void> {
    auto bad = tx.exec("INSERT INTO " + tx.table("rm_int_key") + " (position) VALUES (?1)", {9});
    CHECK_FALSE(bad.ok());  // label is NOT NULL
    auto syntax = tx.exec("THIS IS NOT SQL");
    CHECK_FALSE(syntax.ok());
    return {};
  });
  CHECK(h.all<int_key_row>().size() == 5);
}

TEST_CASE("read() gives a read-only snapshot and passes the function's error through") {
  harness h;
  h.write([&](sql_tx& tx) { return tx.upsert(int_key_row{1, "one"}); });

  // Writes through the read transaction fail and change nothing.
  auto w = h.runner->read([&](sql_tx& tx) -> result<void> {
    auto u = tx.upsert(int_key_row{2, "two"});
    if (!u) return u;
    auto d = tx.exec("DELETE FROM " + tx.table("rm_int_key"));
    if (!d) return std::move(d).error();
    return {};
  });
  CHECK_FALSE(w.ok());
  auto rows = h.all<int_key_row>();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0] == int_key_row{1, "one"});

  auto e = h.runner->read(
      [](sql_tx&) -> result<void> { return annals::error(errc::rejected, "from the reader"); });
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().kind() == errc::rejected);
  CHECK(e.error().message() == "from the reader");
}

TEST_CASE("an empty string_view or blob parameter binds an empty value, not NULL") {
  harness h;
  h.write([&](sql_tx& tx) -> result<void> {
    for (std::int64_t i = 1; i <= 2; ++i) {
      if (auto u = tx.upsert(int_key_row{i, i == 1 ? "" : "x"}); !u) return u;
    }
    return {};
  });
  const std::string_view empty_text;  // data() == nullptr
  const annals::sql_value::blob_ref empty_blob{std::string_view()};
  auto got =
      h.query("SELECT typeof(?1), typeof(?2), ?1 = '', length(?2)", {empty_text, empty_blob});
  REQUIRE(got.size() == 1);
  CHECK(got[0][0] == "text");
  CHECK(got[0][1] == "blob");
  CHECK(got[0][2] == "1");
  CHECK(got[0][3] == "0");
  auto rows = h.all<int_key_row>("label = ?1", {empty_text});
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].position == 1);
}
