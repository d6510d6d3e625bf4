// annals/read_model.hpp — read-model rows as Hana structs, mapped to SQLite tables.
//
//   struct balance_row {
//     BOOST_HANA_DEFINE_STRUCT(balance_row,
//       (std::string, account_id),
//       (std::string, owner),
//       (std::int64_t, balance_cents),
//       (std::optional<std::int64_t>, closed_at_us));
//     static constexpr std::string_view table = "account_balances";
//     static constexpr std::string_view key[] = {"account_id"};
//   };
//
// BOOST_HANA_DEFINE_STRUCT members have no default values: create rows with `balance_row r{};`
// (value-initialized), not `balance_row r;`.
//
// The framework derives the DDL, the upsert, the delete and typed selects (sql_tx::upsert,
// erase, find, select). Supported member types: bool, integers up to 64 bits (unsigned up to
// 32), float, double, std::string, annals::blob, and std::optional of those (NULL when empty).
// Any other member type is a compile error naming it. There is no implicit migration: a
// changed row means a new projection version, and so a rebuild.
#pragma once

#include <annals/sql.hpp>

#include <boost/hana/accessors.hpp>
#include <boost/hana/first.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/second.hpp>
#include <boost/hana/core/to.hpp>
#include <boost/hana/string.hpp>

#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace annals {

enum class column_type { integer, real, text, blob };

struct column_info {
  std::string name;
  column_type type;
  bool nullable;
};

// The shape of a row type, derived once per type.
struct table_shape {
  std::string table;                // logical table name
  std::vector<column_info> columns;
  std::vector<std::size_t> key;     // indexes into columns
};

namespace detail {
template <class T>
struct column_traits {
  static constexpr bool supported = false;
};
template <>
struct column_traits<bool> {
  static constexpr bool supported = true;
  static constexpr column_type type = column_type::integer;
};
template <class T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool> &&
           (std::is_signed_v<T> ? sizeof(T) <= 8 : sizeof(T) <= 4))
struct column_traits<T> {
  static constexpr bool supported = true;
  static constexpr column_type type = column_type::integer;
};
template <class T>
  requires std::is_floating_point_v<T>
struct column_traits<T> {
  static constexpr bool supported = sizeof(T) <= 8;
  static constexpr column_type type = column_type::real;
};
template <>
struct column_traits<std::string> {
  static constexpr bool supported = true;
  static constexpr column_type type = column_type::text;
};
template <>
struct column_traits<blob> {
  static constexpr bool supported = true;
  static constexpr column_type type = column_type::blob;
};

template <class T>
struct optional_of {
  using type = T;
  static constexpr bool nullable = false;
};
template <class T>
struct optional_of<std::optional<T>> {
  using type = T;
  static constexpr bool nullable = true;
};
}  // namespace detail

// Diagnostic: instantiated for every member; fails naming the unsupported type.
template <class T>
struct read_model_member_type_is_not_supported {
  static_assert(detail::column_traits<typename detail::optional_of<T>::type>::supported,
                "annals: a read-model member's type cannot be mapped to a column; use bool, an "
                "integer up to 64 bits (unsigned up to 32), float, double, std::string, "
                "annals::blob, or std::optional of one of these. The type is the template "
                "argument of read_model_member_type_is_not_supported<T>");
  static constexpr bool value = true;
};

namespace detail {
// Compiled (src/projection/read_model.cpp).
table_shape make_shape(std::string_view table, std::vector<column_info> columns,
                       const std::string_view* key_begin, const std::string_view* key_end);
result<void> upsert_row(sql_tx& tx, const table_shape& s, const std::vector<sql_value>& values);
result<bool> erase_row(sql_tx& tx, const table_shape& s, const std::vector<sql_value>& key);
result<std::int64_t> select_rows(sql_tx& tx, const table_shape& s, std::string_view where,
                                 const sql_value* params, std::size_t count,
                                 std::string_view order_by, const row_visitor& visit);
result<std::int64_t> find_row(sql_tx& tx, const table_shape& s,
                              const std::vector<sql_value>& key, const row_visitor& visit);

template <class T>
sql_value to_sql(const T& v) {
  if constexpr (optional_of<T>::nullable) {
    return v ? to_sql(*v) : sql_value();
  } else if constexpr (std::is_same_v<T, bool>) {
    return sql_value(v);
  } else if constexpr (std::is_integral_v<T>) {
    return sql_value(static_cast<long long>(v));
  } else if constexpr (std::is_floating_point_v<T>) {
    return sql_value(static_cast<double>(v));
  } else {
    return sql_value(v);  // std::string, blob
  }
}

template <class T>
void from_sql(const sql_row& r, int i, T& out) {
  if constexpr (optional_of<T>::nullable) {
    if (r.is_null(i)) {
      out.reset();
    } else {
      from_sql(r, i, out.emplace());
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    out = r.int64(i) != 0;
  } else if constexpr (std::is_integral_v<T>) {
    out = static_cast<T>(r.int64(i));
  } else if constexpr (std::is_floating_point_v<T>) {
    out = static_cast<T>(r.real(i));
  } else if constexpr (std::is_same_v<T, std::string>) {
    out = r.text(i);
  } else {
    out = r.bytes(i);
  }
}

template <class Row>
const table_shape& shape_of() {
  static const table_shape shape = [] {
    std::vector<column_info> cols;
    boost::hana::for_each(boost::hana::accessors<Row>(), [&](auto pair) {
      using member = std::remove_cvref_t<decltype(boost::hana::second(pair)(std::declval<Row&>()))>;
      static_assert(read_model_member_type_is_not_supported<member>::value);
      using base = typename optional_of<member>::type;
      if constexpr (column_traits<base>::supported) {  // else: the static_assert above says why
        cols.push_back({boost::hana::to<const char*>(boost::hana::first(pair)),
                        column_traits<base>::type, optional_of<member>::nullable});
      }
    });
    return make_shape(Row::table, std::move(cols), std::begin(Row::key), std::end(Row::key));
  }();
  return shape;
}

template <class Row>
std::vector<sql_value> values_of(const Row& row) {
  std::vector<sql_value> out;
  boost::hana::for_each(boost::hana::accessors<Row>(),
                        [&](auto pair) { out.push_back(to_sql(boost::hana::second(pair)(row))); });
  return out;
}

template <class Row>
Row row_from(const sql_row& r) {
  Row row{};
  int i = 0;
  boost::hana::for_each(boost::hana::accessors<Row>(),
                        [&](auto pair) { from_sql(r, i++, boost::hana::second(pair)(row)); });
  return row;
}
}  // namespace detail

template <class Row>
result<void> sql_tx::upsert(const Row& row) {
  return detail::upsert_row(*this, detail::shape_of<Row>(), detail::values_of(row));
}

template <class Row, class... Key>
result<bool> sql_tx::erase(const Key&... key) {
  return detail::erase_row(*this, detail::shape_of<Row>(), {detail::to_sql(key)...});
}

template <class Row, class... Key>
result<std::optional<Row>> sql_tx::find(const Key&... key) {
  std::optional<Row> out;
  auto r = detail::find_row(*this, detail::shape_of<Row>(), {detail::to_sql(key)...},
                            [&](const sql_row& row) {
                              out = detail::row_from<Row>(row);
                              return false;
                            });
  if (!r) return std::move(r).error();
  return out;
}

template <class Row>
result<std::int64_t> sql_tx::select(std::string_view where, sql_params params,
                                    const std::function<bool(const Row&)>& visit,
                                    std::string_view order_by) {
  return detail::select_rows(*this, detail::shape_of<Row>(), where, params.begin(), params.size(),
                             order_by,
                             [&](const sql_row& r) { return visit(detail::row_from<Row>(r)); });
}

// The tables a projection owns (created, rebuilt, reset and dropped together).
template <class... Rows>
struct table_list {
  static std::vector<const table_shape*> shapes() { return {&detail::shape_of<Rows>()...}; }
};

}  // namespace annals
