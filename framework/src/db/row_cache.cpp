#include "db/row_cache.hpp"

#include <cmath>
#include <limits>
#include <map>
#include <utility>

namespace annals::detail {
namespace {

// Appends `v` to `out` if it is of column type `t`; false otherwise.
bool encode(column_type t, const sql_value& v, std::string& out) {
  const auto& x = v.get();
  auto bytes = [&](std::string_view b) {
    auto n = static_cast<std::uint32_t>(b.size());
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
    out.append(b);
  };
  switch (t) {
    case column_type::integer:
      if (auto* i = std::get_if<std::int64_t>(&x)) {
        out.append(reinterpret_cast<const char*>(i), sizeof *i);
        return true;
      }
      return false;
    case column_type::real:
      if (auto* d = std::get_if<double>(&x)) {
        // One key per value the database tells apart: -0 equals 0, and every NaN equals NaN.
        double v = *d == 0 ? 0.0 : *d;
        if (std::isnan(v)) v = std::numeric_limits<double>::quiet_NaN();
        out.append(reinterpret_cast<const char*>(&v), sizeof v);
        return true;
      }
      return false;
    case column_type::text:
      if (auto* s = std::get_if<std::string_view>(&x)) return bytes(*s), true;
      return false;
    case column_type::blob:
      if (auto* b = std::get_if<sql_value::blob_ref>(&x)) return bytes(b->bytes), true;
      return false;
  }
  return false;
}

std::string start(std::string_view physical) {
  std::string k;
  auto n = static_cast<std::uint32_t>(physical.size());
  k.append(reinterpret_cast<const char*>(&n), sizeof n);
  k.append(physical);
  return k;
}

}  // namespace

std::string row_cache::key_of(const table_shape& s, std::string_view physical,
                              const sql_value* key, std::size_t n) {
  if (n != s.key.size()) return {};
  std::string k = start(physical);
  for (std::size_t i = 0; i < n; ++i) {
    if (!encode(s.columns[s.key[i]].type, key[i], k)) return {};
  }
  return k;
}

std::string row_cache::key_of_row(const table_shape& s, std::string_view physical,
                                  const std::vector<sql_value>& values) {
  if (values.size() != s.columns.size()) return {};
  std::string k = start(physical);
  for (auto c : s.key) {
    if (!encode(s.columns[c].type, values[c], k)) return {};
  }
  return k;
}

void row_cache::clear() {
  if (dirty_) {
    throw std::logic_error("annals: internal error: read-model rows held by a batch were dropped "
                           "before being written");
  }
  rows_.clear();
}

const std::optional<row_cache::row>* row_cache::find(const std::string& key) const {
  auto it = rows_.find(key);
  return it == rows_.end() ? nullptr : &it->second.r;
}

void row_cache::put_read(const std::string& key, std::optional<row> r) {
  // Never over a written row: a find that missed cannot race one of this batch's writes.
  auto [it, added] = rows_.try_emplace(key);
  if (added || !it->second.dirty) it->second.r = std::move(r);
}

void row_cache::put_written(const std::string& key, const table_shape& s,
                            std::string_view physical, std::optional<row> r, row key_values) {
  entry& e = rows_[key];
  if (!e.dirty) {
    e.dirty = true;
    ++dirty_;
    e.shape = &s;
    e.physical = std::string(physical);
  }
  e.r = std::move(r);
  e.key_values = std::move(key_values);
}

row_cache::row row_cache::owned(const sql_value* values, std::size_t n) {
  row r;
  r.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, sql_value::null_t>) {
            r.emplace_back(std::monostate{});
          } else if constexpr (std::is_same_v<T, std::string_view>) {
            r.emplace_back(std::string(x));
          } else if constexpr (std::is_same_v<T, sql_value::blob_ref>) {
            r.emplace_back(blob{std::string(x.bytes)});
          } else {
            r.emplace_back(x);
          }
        },
        values[i].get());
  }
  return r;
}

std::vector<row_cache::table_rows> row_cache::take_written() {
  std::vector<table_rows> out;
  if (!dirty_) return out;
  std::map<std::pair<const table_shape*, std::string_view>, std::size_t> index;
  for (auto& [key, e] : rows_) {
    if (!e.dirty) continue;
    e.dirty = false;
    auto [it, added] = index.try_emplace({e.shape, e.physical}, out.size());
    if (added) out.push_back(table_rows{e.shape, e.physical, {}, {}});
    auto& t = out[it->second];
    if (e.r) {
      t.upserts.push_back(&*e.r);
    } else {
      t.erases.push_back(&e.key_values);
    }
  }
  dirty_ = 0;
  return out;
}

row_cache::row row_cache::copy(const table_shape& s, const sql_row& r) {
  row out;
  out.reserve(s.columns.size());
  for (std::size_t i = 0; i < s.columns.size(); ++i) {
    const int c = static_cast<int>(i);
    if (r.is_null(c)) {
      out.emplace_back(std::monostate{});
      continue;
    }
    switch (s.columns[i].type) {
      case column_type::integer: out.emplace_back(r.int64(c)); break;
      case column_type::real: out.emplace_back(r.real(c)); break;
      case column_type::text: out.emplace_back(r.text(c)); break;
      case column_type::blob: out.emplace_back(r.bytes(c)); break;
    }
  }
  return out;
}

}  // namespace annals::detail
