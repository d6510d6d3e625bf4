#include "backends/postgres/pg.hpp"


#include <fmt/format.h>

#include <endian.h>

#include <cstring>
#include <optional>

namespace annals::pg {

namespace {
constexpr unsigned int int8_oid = 20, int4_oid = 23, bytea_oid = 17, float8_oid = 701;
static_assert(int8_oid == array_param::int8 && bytea_oid == array_param::bytea);

std::string trimmed(const char* s) {
  std::string out = s ? s : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}
}  // namespace

params& params::add_int8(std::int64_t v) {
  return add_be64(static_cast<std::uint64_t>(v), int8_oid);
}

params& params::add_be64(std::uint64_t v, unsigned int type) {
  auto buf = std::make_unique<char[]>(8);
  std::uint64_t be = htobe64(v);
  std::memcpy(buf.get(), &be, 8);
  types_.push_back(type);
  values_.push_back(buf.get());
  lengths_.push_back(8);
  formats_.push_back(1);
  ints_.push_back(std::move(buf));
  return *this;
}

params& params::add_int4(std::int32_t v) {
  auto buf = std::make_unique<char[]>(4);
  std::uint32_t be = htobe32(static_cast<std::uint32_t>(v));
  std::memcpy(buf.get(), &be, 4);
  types_.push_back(int4_oid);
  values_.push_back(buf.get());
  lengths_.push_back(4);
  formats_.push_back(1);
  ints_.push_back(std::move(buf));
  return *this;
}

void array_param::add_int8(std::int64_t v) {
  const std::uint32_t len = htobe32(8);
  const std::uint64_t be = htobe64(static_cast<std::uint64_t>(v));
  body_.append(reinterpret_cast<const char*>(&len), 4);
  body_.append(reinterpret_cast<const char*>(&be), 8);
  ++count_;
}

void array_param::add_float8(double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, 8);
  add_int8(static_cast<std::int64_t>(bits));  // the same 8 big-endian bytes
}

void array_param::add_bytes(std::string_view v) {
  const std::uint32_t len = htobe32(static_cast<std::uint32_t>(v.size()));
  body_.append(reinterpret_cast<const char*>(&len), 4);
  body_.append(v);
  ++count_;
}

void array_param::add_null() {
  const std::uint32_t len = htobe32(0xFFFFFFFFu);  // -1
  body_.append(reinterpret_cast<const char*>(&len), 4);
  has_null_ = true;
  ++count_;
}

params& params::add_array(const array_param& a) {
  // array_send's layout: dimensions, a has-null flag, the element type, then per dimension
  // its length and lower bound (1), then the elements.
  std::uint32_t header[5] = {htobe32(a.count_ ? 1 : 0), htobe32(a.has_null_ ? 1 : 0),
                             htobe32(a.element_), htobe32(static_cast<std::uint32_t>(a.count_)),
                             htobe32(1)};
  const std::size_t head = a.count_ ? sizeof header : 3 * sizeof header[0];
  const std::size_t size = head + a.body_.size();
  auto owned = std::make_unique<char[]>(size);
  std::memcpy(owned.get(), header, head);
  std::memcpy(owned.get() + head, a.body_.data(), a.body_.size());
  types_.push_back(a.element_ == int8_oid             ? 1016   // int8[]
                   : a.element_ == bytea_oid          ? 1001   // bytea[]
                   : a.element_ == array_param::float8 ? 1022   // float8[]
                                                      : 1009);  // text[]
  values_.push_back(owned.get());
  lengths_.push_back(static_cast<int>(size));
  formats_.push_back(1);
  ints_.push_back(std::move(owned));
  return *this;
}

params& params::add_raw(std::string_view v, unsigned int type) {
  types_.push_back(type);
  // A non-null pointer even for an empty value: null means SQL NULL.
  values_.push_back(v.data() ? v.data() : "");
  lengths_.push_back(static_cast<int>(v.size()));
  formats_.push_back(1);
  return *this;
}

params& params::add_null_bytea() {
  types_.push_back(bytea_oid);
  values_.push_back(nullptr);
  lengths_.push_back(0);
  formats_.push_back(1);
  return *this;
}

params& params::add_float8(double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, 8);
  return add_be64(bits, float8_oid);
}

params& params::add_null() {
  types_.push_back(0);
  values_.push_back(nullptr);
  lengths_.push_back(0);
  formats_.push_back(1);
  return *this;
}

void params::reserve(std::size_t n) {
  types_.reserve(n);
  values_.reserve(n);
  lengths_.reserve(n);
  formats_.reserve(n);
}

result<connection> connection::open(const std::string& conninfo, int connect_timeout_s) {
  // With expand_dbname the URI is expanded in place; keywords after it override its values.
  const std::string timeout = std::to_string(connect_timeout_s);
  const char* keys[] = {"dbname", connect_timeout_s > 0 ? "connect_timeout" : nullptr, nullptr};
  const char* values[] = {conninfo.c_str(), timeout.c_str(), nullptr};
  connection c(PQconnectdbParams(keys, values, 1));
  if (!c.get()) return error(errc::io, "cannot connect to PostgreSQL: out of memory");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    return error(errc::io,
                 fmt::format("cannot connect to PostgreSQL: {}", trimmed(PQerrorMessage(c.get()))));
  }
  // Notices ("relation already exists, skipping") are the server chatting, not errors: libpq
  // would print them on stderr.
  PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
  return c;
}

bool connection::healthy() const noexcept {
  return conn_ && PQstatus(conn_.get()) == CONNECTION_OK;
}

bool connection::idle() const noexcept {
  return healthy() && PQtransactionStatus(conn_.get()) == PQTRANS_IDLE;
}

error make_error(PGconn* conn, const PGresult* res, std::string_view what, failure* why) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = trimmed(res ? PQresultErrorMessage(res) : nullptr);
  if (message.empty()) message = trimmed(conn ? PQerrorMessage(conn) : nullptr);
  std::string_view s = state ? state : "";
  errc kind = errc::io;
  // 40001 serialization failure, 40P01 deadlock, 55P03 lock not available (lock_timeout),
  // 57014 statement cancelled (statement_timeout), 53300 too many connections; 25006 a write
  // in a read-only transaction (a read-only open, or a read-only database).
  if (s == "40001" || s == "40P01" || s == "55P03" || s == "57014" || s == "53300") {
    kind = errc::busy;
  }
  if (s == "25006") kind = errc::read_only;  // read_only_sql_transaction
  // 42P05 duplicate / 26000 unknown prepared statement: Annals names its statements per
  // connection and never reuses a name, so the server connection is shared with other clients:
  // a pooler in transaction or statement mode. Say so, or the user sees "annals_1 already
  // exists" and nothing more.
  if (s == "42P05" || s == "26000") {
    message += " (the server connection's prepared statements belong to another client: is "
               "it behind a pooler in transaction mode? Annals needs a direct connection or "
               "session pooling, e.g. PgBouncer pool_mode = session; README, \"Behind a "
               "connection pooler\")";
  }
  if (why) {
    why->sqlstate = std::string(s);
    const char* c = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : nullptr;
    why->constraint = c ? c : "";
    why->message = message;
  }
  return error(kind, fmt::format("{}: {}", what, message));
}

result<const std::string*> connection::prepare(std::string_view what, const std::string& sql,
                                               const params& p, failure* why) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = fmt::format("annals_{}", ++statements_);
    pg_result prep(PQprepare(conn_.get(), name.c_str(), sql.c_str(), p.size(), p.types()));
    if (!prep || PQresultStatus(prep.get()) != PGRES_COMMAND_OK) {
      return make_error(conn_.get(), prep.get(), what, why);
    }
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  return &it->second;
}

result<pg_result> connection::exec(std::string_view what, const std::string& sql,
                                   const params& p, bool cache, failure* why, bool text_results) {
  const int format = text_results ? 0 : 1;
  PGconn* c = conn_.get();
  pg_result res;
  if (cache) {
    auto name = prepare(what, sql, p, why);
    if (!name) return std::move(name).error();
    res.reset(PQexecPrepared(c, (*name)->c_str(), p.size(), p.values(), p.lengths(),
                             p.formats(), format));
  } else {
    res.reset(PQexecParams(c, sql.c_str(), p.size(), p.types(), p.values(), p.lengths(),
                           p.formats(), format));
  }
  if (!res) return make_error(c, nullptr, what, why);
  auto st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return make_error(c, res.get(), what, why);
  return res;
}

result<void> connection::send(std::string_view what, const std::string& sql, const params& p) {
  PGconn* c = conn_.get();
  if (PQpipelineStatus(c) == PQ_PIPELINE_OFF && !PQenterPipelineMode(c)) {
    return make_error(c, nullptr, what);
  }
  if (queued_ == 0) queued_what_ = std::string(what);
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    // Prepared in the pipeline too. Named before the server confirms it: a failed pipeline
    // forgets every name (sync), so a statement that was never prepared is not reused.
    std::string name = fmt::format("annals_{}", ++statements_);
    if (!PQsendPrepare(c, name.c_str(), sql.c_str(), p.size(), p.types())) {
      return make_error(c, nullptr, what);
    }
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  if (!PQsendQueryPrepared(c, it->second.c_str(), p.size(), p.values(), p.lengths(), p.formats(),
                           1)) {
    return make_error(c, nullptr, what);
  }
  if (++queued_ >= max_queued) return sync();
  return {};
}

result<void> connection::sync(failure* why) {
  PGconn* c = conn_.get();
  if (PQpipelineStatus(c) == PQ_PIPELINE_OFF) return {};
  queued_ = 0;
  std::optional<error> failed;
  if (!PQpipelineSync(c)) {
    failed = make_error(c, nullptr, queued_what_, why);
  } else {
    // Each statement's results end with a null; the sync point's own result ends the pipeline.
    // A null with the connection gone would come forever: stop there.
    for (;;) {
      pg_result r(PQgetResult(c));
      if (!r) {
        if (PQstatus(c) != CONNECTION_OK) {
          if (!failed) failed = make_error(c, nullptr, queued_what_, why);
          break;
        }
        continue;
      }
      auto st = PQresultStatus(r.get());
      if (st == PGRES_PIPELINE_SYNC) break;
      if (st == PGRES_FATAL_ERROR && !failed) failed = make_error(c, r.get(), queued_what_, why);
    }
  }
  (void)PQexitPipelineMode(c);
  if (failed) {
    forget_prepared();
    return std::move(*failed);
  }
  return {};
}

result<std::int64_t> connection::for_each_row(std::string_view what, const std::string& sql,
                                              const params& p, bool cache, const row_fn& row) {
  PGconn* c = conn_.get();
  int sent;
  if (cache) {
    auto name = prepare(what, sql, p, nullptr);
    if (!name) return std::move(name).error();
    sent = PQsendQueryPrepared(c, (*name)->c_str(), p.size(), p.values(), p.lengths(),
                               p.formats(), 1);
  } else {
    sent = PQsendQueryParams(c, sql.c_str(), p.size(), p.types(), p.values(), p.lengths(),
                             p.formats(), 1);
  }
  if (!sent) return make_error(c, nullptr, what);
  (void)PQsetSingleRowMode(c);  // if refused, rows arrive in one result: still correct
  std::int64_t rows = 0;
  bool stopped = false;
  std::optional<error> failed;
  // Always read to the end (PQgetResult returns null): the connection must be idle again.
  while (PGresult* raw = PQgetResult(c)) {
    pg_result r(raw);
    auto st = PQresultStatus(r.get());
    if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK) {
      int n = PQntuples(r.get());
      rows += n;
      for (int i = 0; i < n && !stopped && !failed; ++i) {
        auto k = row(r.get(), i);
        if (!k) {
          failed = std::move(k).error();
        } else if (!*k) {
          stopped = true;
        }
      }
    } else if (!failed) {
      failed = make_error(c, r.get(), what);
    }
  }
  if (failed) return std::move(*failed);
  return rows;
}

result<void> connection::exec_simple(std::string_view what, const char* sql) {
  pg_result res(PQexec(conn_.get(), sql));
  if (!res) return make_error(conn_.get(), nullptr, what);
  auto st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return make_error(conn_.get(), res.get(), what);
  }
  return {};
}

std::int64_t get_int8(const PGresult* r, int row, int col) {
  const char* v = PQgetvalue(r, row, col);
  if (PQgetlength(r, row, col) != 8) return 0;
  std::uint64_t be;
  std::memcpy(&be, v, 8);
  return static_cast<std::int64_t>(be64toh(be));
}

double get_float8(const PGresult* r, int row, int col) {
  const auto bits = static_cast<std::uint64_t>(get_int8(r, row, col));  // IEEE 754, big-endian
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

std::string_view get_bytes(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

result<bool> has_table(connection& c, const char* table) {
  params q;
  q.add_text(table);
  auto r = c.exec("cannot read the store's tables",
                  "SELECT count(*) FROM pg_catalog.pg_class WHERE oid = to_regclass($1)", q,
                  false);
  if (!r) return std::move(r).error();
  return get_int8(r->get(), 0, 0) != 0;
}

std::string identity(PGconn* c) {
  auto text = [](const char* v) { return std::string_view(v ? v : ""); };
  // Two URIs naming one server differently (localhost, 127.0.0.1) give two identities: then
  // only this process's wake-ups are missed, LISTEN and polling still see the commits.
  return fmt::format("postgres:{}:{}/{}", text(PQhost(c)), text(PQport(c)), text(PQdb(c)));
}

}  // namespace annals::pg
