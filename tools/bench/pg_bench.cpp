// annals-bench on PostgreSQL (issue 5): the append figures through annals::open_store(uri),
// each beside two raw libpq baselines measured in the same run, in alternating blocks
// (bench_common.hpp, paired_sides):
//   - INSERT: per append BEGIN, read the stream row, insert or move it, one prepared
//     single-row INSERT per event, COMMIT;
//   - COPY: the same, but the events go in by one binary COPY per append.
// Both write tables of the store's shape (streams + events, the same unique constraints; the
// DDL below is written by hand on purpose, not taken from the store) with the same payloads,
// at the server's durability, which must be synchronous_commit=on (checked). Every scenario
// works in fresh databases of its own (CREATE DATABASE with a unique name, dropped at its
// end), one per side and rep, so no side sees another's tables or dead rows.
#include "pg_bench.hpp"

#include "raw_folder.hpp"
#include "read_side.hpp"

#include <annals/projection_runner.hpp>

#include "account.hpp"
#include "projections.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace annals_bench {
namespace {

// ---- libpq, by hand -------------------------------------------------------------------------

struct result_deleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, result_deleter>;

// Parameters in binary format: int8 big-endian, text and bytea as their bytes.
class pg_params {
 public:
  pg_params& int8(std::int64_t v) {
    auto& b = ints_.emplace_back();
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(static_cast<std::uint64_t>(v) >> (56 - 8 * i));
    return add(b.data(), 8);
  }
  pg_params& bytes(std::string_view v) { return add(v.data(), v.size()); }
  pg_params& boolean(bool v) { return add(v ? "\1" : "\0", 1); }
  pg_params& null() {
    values_.push_back(nullptr);
    lengths_.push_back(0);
    formats_.push_back(1);
    return *this;
  }
  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  pg_params& add(const char* p, std::size_t n) {
    values_.push_back(p);
    lengths_.push_back(static_cast<int>(n));
    formats_.push_back(1);
    return *this;
  }
  std::deque<std::array<char, 8>> ints_;  // stable addresses
  std::vector<const char*> values_;
  std::vector<int> lengths_, formats_;
};

// A one-dimensional array parameter in PostgreSQL's binary format (array_send's layout: one
// dimension, a has-null flag, the element type, the length, lower bound 1, then each element
// as a length and its bytes). The statement names the type ($1::int8[]).
class pg_array {
 public:
  static constexpr std::uint32_t int8_oid = 20, text_oid = 25, bool_oid = 16;
  explicit pg_array(std::uint32_t element_oid) : oid_(element_oid) {}
  pg_array& int8(std::int64_t v) {
    be32(8);
    for (int i = 0; i < 8; ++i) {
      body_ += static_cast<char>(static_cast<std::uint64_t>(v) >> (56 - 8 * i));
    }
    return ++n_, *this;
  }
  pg_array& bytes(std::string_view v) {
    be32(static_cast<std::uint32_t>(v.size()));
    body_.append(v);
    return ++n_, *this;
  }
  pg_array& boolean(bool v) {
    be32(1);
    body_ += v ? '\1' : '\0';
    return ++n_, *this;
  }
  pg_array& null() {
    be32(0xFFFFFFFFu);
    has_null_ = true;
    return ++n_, *this;
  }
  std::string encode() const {
    pg_array head(oid_);
    for (std::uint32_t v : {1u, has_null_ ? 1u : 0u, oid_, n_, 1u}) head.be32(v);
    return head.body_ + body_;
  }

 private:
  void be32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) body_ += static_cast<char>(v >> (24 - 8 * i));
  }
  std::uint32_t oid_, n_ = 0;
  bool has_null_ = false;
  std::string body_;
};

std::int64_t get_int8(const PGresult* r, int row, int col) {  // binary int8
  auto p = reinterpret_cast<const unsigned char*>(PQgetvalue(r, row, col));
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return static_cast<std::int64_t>(v);
}
std::string_view get_bytes(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

class pg_conn {
 public:
  explicit pg_conn(const std::string& uri) : c_(PQconnectdb(uri.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(c_);
      PQfinish(c_);
      storage_failure(fmt::format("baseline: cannot connect: {}", msg));
    }
    PQsetNoticeProcessor(c_, [](void*, const char*) {}, nullptr);  // "does not exist, skipping"
  }
  ~pg_conn() { PQfinish(c_); }
  pg_conn(const pg_conn&) = delete;
  pg_conn& operator=(const pg_conn&) = delete;

  // A command without parameters (may hold several statements).
  void exec(const std::string& sql) {
    sync();
    (void)expect(PQexec(c_, sql.c_str()), PGRES_COMMAND_OK, sql);
  }

  // A statement with bound parameters; binary results.
  pg_result query(const std::string& sql, const pg_params& p = {}) {
    sync();
    return expect(PQexecParams(c_, sql.c_str(), p.size(), nullptr, p.values(), p.lengths(),
                               p.formats(), 1),
                  PGRES_TUPLES_OK, sql);
  }
  // The same with text results (settings).
  pg_result query_text(const std::string& sql) {
    return expect(PQexecParams(c_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0),
                  PGRES_TUPLES_OK, sql);
  }

  void prepare(const std::string& name, const std::string& sql) {
    (void)expect(PQprepare(c_, name.c_str(), sql.c_str(), 0, nullptr), PGRES_COMMAND_OK, sql);
  }
  // A prepared statement; binary results. `rows`: whether it returns rows.
  pg_result run(const std::string& name, const pg_params& p, bool rows = false) {
    sync();
    return expect(PQexecPrepared(c_, name.c_str(), p.size(), p.values(), p.lengths(), p.formats(),
                                 1),
                  rows ? PGRES_TUPLES_OK : PGRES_COMMAND_OK, name);
  }

  // A prepared statement whose result is not needed, pipelined (libpq's pipeline mode): sent
  // without waiting; exec, run and sync wait for what was sent. As the framework's pipelined
  // writes, it syncs every 256 statements.
  void send(const std::string& name, const pg_params& p) {
    if (PQpipelineStatus(c_) == PQ_PIPELINE_OFF && !PQenterPipelineMode(c_)) {
      storage_failure(fmt::format("baseline: pipeline mode: {}", PQerrorMessage(c_)));
    }
    if (!PQsendQueryPrepared(c_, name.c_str(), p.size(), p.values(), p.lengths(), p.formats(),
                             1)) {
      storage_failure(fmt::format("baseline: {}: {}", name, PQerrorMessage(c_)));
    }
    if (++queued_ >= 256) sync();
  }
  void sync() {
    if (PQpipelineStatus(c_) == PQ_PIPELINE_OFF) return;
    queued_ = 0;
    if (!PQpipelineSync(c_)) storage_failure("baseline: pipeline sync failed");
    for (;;) {
      pg_result r(PQgetResult(c_));
      if (!r) {
        if (PQstatus(c_) != CONNECTION_OK) storage_failure("baseline: connection lost");
        continue;
      }
      auto st = PQresultStatus(r.get());
      if (st == PGRES_PIPELINE_SYNC) break;
      if (st != PGRES_COMMAND_OK) {
        storage_failure(fmt::format("baseline: pipelined: {}", PQresultErrorMessage(r.get())));
      }
    }
    (void)PQexitPipelineMode(c_);
  }

  // COPY ... FROM STDIN with `data` (binary COPY format).
  void copy_in(const std::string& sql, const std::string& data) {
    (void)expect(PQexec(c_, sql.c_str()), PGRES_COPY_IN, sql);
    if (PQputCopyData(c_, data.data(), static_cast<int>(data.size())) != 1 ||
        PQputCopyEnd(c_, nullptr) != 1) {
      storage_failure(fmt::format("baseline: COPY failed: {}", PQerrorMessage(c_)));
    }
    pg_result r(PQgetResult(c_));
    while (PGresult* more = PQgetResult(c_)) PQclear(more);
    (void)expect(r.release(), PGRES_COMMAND_OK, sql);
  }

 private:
  pg_result expect(PGresult* raw, ExecStatusType want, std::string_view what) {
    pg_result r(raw);
    if (!r || PQresultStatus(r.get()) != want) {
      storage_failure(fmt::format("baseline: {}: {}", what,
                                  r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c_)));
    }
    return r;
  }
  PGconn* c_;
  int queued_ = 0;
};

// Binary COPY rows (PostgreSQL's "PGCOPY" file format).
class copy_rows {
 public:
  copy_rows() { buf_.assign("PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19); }
  void row(int fields) { be(static_cast<std::uint16_t>(fields), 2); }
  void int8(std::int64_t v) {
    be(8, 4);
    be(static_cast<std::uint64_t>(v), 8);
  }
  void bytes(std::string_view v) {
    be(static_cast<std::uint32_t>(v.size()), 4);
    buf_.append(v);
  }
  void null() { be(0xffffffffu, 4); }
  const std::string& done() {
    be(0xffff, 2);
    return buf_;
  }

 private:
  void be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) buf_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string buf_;
};

// ---- scratch databases ----------------------------------------------------------------------

// `uri` with its database replaced by `db` (a name made of [a-z0-9_], so no escaping).
std::string uri_with_database(std::string_view uri, std::string_view db) {
  auto scheme = uri.find("://");
  auto rest = scheme + 3;
  auto path = uri.find_first_of("/?", rest);
  std::string_view authority = uri.substr(0, path == std::string_view::npos ? uri.size() : path);
  std::string_view query;
  if (path != std::string_view::npos) {
    auto q = uri.find('?', path);
    if (q != std::string_view::npos) query = uri.substr(q);
  }
  return fmt::format("{}/{}{}", authority, db, query);
}

// A database of its own, created from the server URI and dropped (WITH (FORCE)) when this
// object goes, also when a scenario fails.
class scratch_db {
 public:
  scratch_db(const std::string& server_uri, std::string_view label) : server_uri_(server_uri) {
    static std::atomic<int> counter{0};
    name_ = fmt::format("annals_bench_{}_{}_{}", getpid(), ++counter, label);
    pg_conn(server_uri_).exec(fmt::format("CREATE DATABASE \"{}\"", name_));
    uri_ = uri_with_database(server_uri_, name_);
  }
  ~scratch_db() {
    try {
      pg_conn(server_uri_).exec(fmt::format("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name_));
    } catch (const bench_failure& e) {
      note("cannot drop database {}: {}", name_, e.message);
    }
  }
  scratch_db(const scratch_db&) = delete;
  scratch_db& operator=(const scratch_db&) = delete;
  const std::string& uri() const { return uri_; }

 private:
  std::string server_uri_, name_, uri_;
};

// The server's settings the figures depend on; synchronous_commit must be on.
struct server_facts {
  std::string version, fsync, synchronous_commit, shared_buffers, max_wal_size, wal_sync_method;

  static server_facts read(const std::string& uri) {
    pg_conn c(uri);
    auto r = c.query_text(
        "SELECT current_setting('server_version'), current_setting('fsync'), "
        "current_setting('synchronous_commit'), current_setting('shared_buffers'), "
        "current_setting('max_wal_size'), current_setting('wal_sync_method')");
    server_facts f{PQgetvalue(r.get(), 0, 0), PQgetvalue(r.get(), 0, 1), PQgetvalue(r.get(), 0, 2),
                   PQgetvalue(r.get(), 0, 3), PQgetvalue(r.get(), 0, 4), PQgetvalue(r.get(), 0, 5)};
    if (f.synchronous_commit != "on") {
      throw bench_failure{2, fmt::format("the server's synchronous_commit is '{}': the "
                                         "PostgreSQL figures are defined with 'on'",
                                         f.synchronous_commit)};
    }
    if (f.fsync != "on") note("warning: the server runs with fsync={}: commits are not durable", f.fsync);
    return f;
  }

  void describe(figure& fig) const {
    fig.extra.emplace_back("backend", "\"postgresql\"");
    fig.extra.emplace_back("server_version", fmt::format("\"{}\"", json_escape(version)));
    fig.extra.emplace_back("fsync", fmt::format("\"{}\"", json_escape(fsync)));
    fig.extra.emplace_back("synchronous_commit",
                           fmt::format("\"{}\"", json_escape(synchronous_commit)));
    fig.extra.emplace_back("shared_buffers", fmt::format("\"{}\"", json_escape(shared_buffers)));
    fig.extra.emplace_back("max_wal_size", fmt::format("\"{}\"", json_escape(max_wal_size)));
    fig.extra.emplace_back("wal_sync_method",
                           fmt::format("\"{}\"", json_escape(wal_sync_method)));
  }
};

// ---- the raw baselines ------------------------------------------------------------------------

// The store's table shape (framework/src/backends/postgres/pg_store.cpp), written again by hand.
constexpr const char* raw_schema = R"sql(
CREATE TABLE streams(
  id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name    BYTEA NOT NULL UNIQUE,
  version BIGINT NOT NULL
);
CREATE TABLE events(
  position       BIGINT PRIMARY KEY,
  stream         BIGINT NOT NULL REFERENCES streams(id),
  stream_version BIGINT NOT NULL,
  event_id       BYTEA NOT NULL,
  type           TEXT NOT NULL,
  recorded_at    BIGINT NOT NULL,
  metadata       BYTEA,
  payload        BYTEA NOT NULL,
  UNIQUE (stream, stream_version),
  UNIQUE (event_id)
);
)sql";

enum class raw_method { insert, copy };

// The hand-written appender on the plan's schedule, one connection per thread. Positions come
// from a counter in this process: with one writer that is all a hand-written appender needs;
// with several it does not give commit order (no gap-free $all): the store's write lock is
// what the concurrent ratio prices.
class raw_pg_appender final : public plan_appender {
 public:
  raw_pg_appender(std::unique_ptr<scratch_db> db, const append_plan& plan, int threads,
                  std::int64_t per_append, raw_method how)
      : plan_appender(plan, threads, per_append), db_(std::move(db)), how_(how) {
    ids_.resize(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      auto& c = *conns_.emplace_back(std::make_unique<pg_conn>(db_->uri()));
      if (t == 0) c.exec(raw_schema);
      c.prepare("find", "SELECT id, version FROM streams WHERE name = $1");
      c.prepare("new_stream", "INSERT INTO streams(name, version) VALUES ($1, $2) RETURNING id");
      c.prepare("move_stream", "UPDATE streams SET version = $2 WHERE id = $1");
      c.prepare("insert_event",
                "INSERT INTO events(position, stream, stream_version, event_id, type, "
                "recorded_at, metadata, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
    }
  }

  void finish() override {
    auto r = conns_[0]->query("SELECT count(*)::int8 FROM events");
    auto want = static_cast<std::int64_t>(plan_.payloads.size());
    if (get_int8(r.get(), 0, 0) != want) {
      logic_failure(fmt::format("baseline holds {} events, {} appended", get_int8(r.get(), 0, 0),
                                want));
    }
    conns_.clear();
    db_.reset();
  }

 private:
  std::int64_t append(int t, std::size_t s, std::int64_t version, std::int64_t first,
                      std::int64_t n) override {
    pg_conn& c = *conns_[static_cast<std::size_t>(t)];
    const std::string& name = plan_.streams[s];
    c.exec("BEGIN");
    std::int64_t sid = 0, current = -1;
    {
      auto r = c.run("find", pg_params().bytes(name), true);
      if (PQntuples(r.get()) == 1) {
        sid = get_int8(r.get(), 0, 0);
        current = get_int8(r.get(), 0, 1);
      }
    }
    if (current != version) {
      logic_failure(fmt::format("baseline: conflict on {}: {} != {}", name, current, version));
    }
    std::int64_t last = current + n;
    if (sid == 0) {
      auto r = c.run("new_stream", pg_params().bytes(name).int8(last), true);
      sid = get_int8(r.get(), 0, 0);
    } else {
      (void)c.run("move_stream", pg_params().int8(sid).int8(last));
    }
    std::int64_t position = next_position_.fetch_add(n) + 1;
    std::int64_t at = now_us();
    auto& ids = ids_[static_cast<std::size_t>(t)];
    if (how_ == raw_method::insert) {
      for (std::int64_t i = 0; i < n; ++i) {
        auto id = ids.next();
        (void)c.run("insert_event",
                    pg_params()
                        .int8(position + i)
                        .int8(sid)
                        .int8(current + 1 + i)
                        .bytes({reinterpret_cast<const char*>(id.data()), id.size()})
                        .bytes(type_deposited())
                        .int8(at)
                        .null()
                        .bytes(plan_.payloads[static_cast<std::size_t>(first + i)]));
      }
    } else {
      copy_rows rows;
      for (std::int64_t i = 0; i < n; ++i) {
        auto id = ids.next();
        rows.row(8);
        rows.int8(position + i);
        rows.int8(sid);
        rows.int8(current + 1 + i);
        rows.bytes({reinterpret_cast<const char*>(id.data()), id.size()});
        rows.bytes(type_deposited());
        rows.int8(at);
        rows.null();
        rows.bytes(plan_.payloads[static_cast<std::size_t>(first + i)]);
      }
      c.copy_in("COPY events(position, stream, stream_version, event_id, type, recorded_at, "
                "metadata, payload) FROM STDIN (FORMAT binary)",
                rows.done());
    }
    c.exec("COMMIT");
    return last;
  }

  std::unique_ptr<scratch_db> db_;
  raw_method how_;
  std::vector<std::unique_ptr<pg_conn>> conns_;
  std::deque<raw_ids> ids_;  // per thread
  std::atomic<std::int64_t> next_position_{0};
};

// ---- append scenarios ---------------------------------------------------------------------

// Three sides in alternating blocks: Annals (side 0), INSERT (1), COPY (2). The figure's
// baseline is the INSERT loop; the COPY side is in copy_* fields.
void append_figure(const config& c, figure& f, std::int64_t events, const append_plan& plan,
                   int connections, std::int64_t per_append, std::string_view label) {
  const std::string& server = c.backend;
  auto facts = server_facts::read(server);
  auto annals_side = [&](int) {
    auto db = std::make_shared<scratch_db>(server, fmt::format("{}_annals", label));
    std::unique_ptr<annals::event_store> store;
    if (connections == 1) {
      store = check(annals::open_store(db->uri()), "cannot open the store");
    } else {
      annals::postgres_options o;
      o.pool_size = static_cast<std::size_t>(connections);
      store = check(annals::open_postgres_store(db->uri(), std::move(o)), "cannot open the store");
    }
    return make_annals_appender(std::move(store), plan, connections, per_append,
                                [db]() mutable { db.reset(); });
  };
  auto raw_side = [&](raw_method how) {
    return [&, how](int) -> std::unique_ptr<worker> {
      auto db = std::make_unique<scratch_db>(
          server, fmt::format("{}_{}", label, how == raw_method::insert ? "insert" : "copy"));
      return std::make_unique<raw_pg_appender>(std::move(db), plan, connections, per_append, how);
    };
  };
  auto r = paired_sides(c.reps, c.blocks,
                        {{events, annals_side}, {events, raw_side(raw_method::insert)},
                         {events, raw_side(raw_method::copy)}});
  f.events = f.baseline_events = events;
  f.annals_seconds = r.seconds[0];
  f.baseline_seconds = r.seconds[1];
  f.block_ratios = r.block_ratios[0];
  double annals_per_s = static_cast<double>(events) / median(r.seconds[0]);
  double copy_per_s = static_cast<double>(events) / median(r.seconds[2]);
  std::string samples = "[";
  for (std::size_t i = 0; i < r.seconds[2].size(); ++i) {
    samples += fmt::format("{}{:.0f}", i ? "," : "", static_cast<double>(events) / r.seconds[2][i]);
  }
  f.extra.emplace_back("copy_per_s", num(copy_per_s, 1));
  f.extra.emplace_back("ratio_to_copy", num(annals_per_s / copy_per_s, 3));
  f.extra.emplace_back("copy_samples_per_s", samples + "]");
  f.extra.emplace_back("copy_block_ratio_median", num(median(r.block_ratios[1]), 3));
  f.extra.emplace_back("connections", std::to_string(connections));
  facts.describe(f);
  note("{}: COPY baseline {:.0f}/s, ratio to COPY {:.3f}", f.scenario, copy_per_s,
       annals_per_s / copy_per_s);
}

const char* raw_note =
    "baselines in the same run, alternating blocks: INSERT = per append BEGIN, select the "
    "stream row, insert or update it, one prepared single-row INSERT per event, COMMIT; COPY = "
    "the same with the events in one binary COPY; tables of the store's shape (hand-written "
    "DDL, same unique constraints), positions from an in-process counter, synchronous_commit=on; "
    "each side and rep in a fresh database";

void pg_append_single(const config& c) {
  auto plan = make_append_plan(c.pg_single_events, c.single_streams, "single");
  figure f;
  f.scenario = "append_single";
  f.target = 0.7;
  f.note = fmt::format(
      "PostgreSQL: 1 event per append through annals::open_store(uri) (pool 4), expected "
      "version exact, {} streams round-robin, no metadata; {}; {} blocks per rep",
      c.single_streams, raw_note, c.blocks);
  append_figure(c, f, c.pg_single_events, plan, 1, 1, "single");
  print_figure(f);
}

void pg_append_batch(const config& c) {
  auto plan = make_append_plan(c.pg_batch_events, 100, "batch");
  figure f;
  f.scenario = "append_batch";
  f.target = 0.6;
  f.note = fmt::format(
      "PostgreSQL: {} events per append through annals::open_store(uri), expected version "
      "exact, 100 streams round-robin, no metadata; {}; {} blocks per rep",
      c.batch_size, raw_note, c.blocks);
  append_figure(c, f, c.pg_batch_events, plan, 1, c.batch_size, "batch");
  print_figure(f);
}

void pg_append_concurrent(const config& c) {
  std::optional<double> one;  // the 1-connection Annals rate of this run
  for (int n : c.pg_connections) {
    auto plan = make_append_plan(c.pg_concurrent_events, 8 * n, "conc");
    figure f;
    f.scenario = "append_concurrent";
    f.note = fmt::format(
        "PostgreSQL: {} threads sharing one store opened with postgres_options::pool_size = "
        "{}, 1 event per append, each thread on its own 8 streams; baselines: {} threads, a "
        "connection each, same appends; {}; {} blocks per rep",
        n, n, n, raw_note, c.blocks);
    append_figure(c, f, c.pg_concurrent_events, plan, n, 1, fmt::format("conc{}", n));
    double rate = static_cast<double>(f.events) / median(f.annals_seconds);
    if (n == 1) one = rate;
    if (one) f.extra.emplace_back("speedup_vs_1_connection", num(rate / *one, 2));
    print_figure(f);
  }
}

// ---- read side: rebuild and live_lag ------------------------------------------------------------

// Fresh databases for the read-side scenarios, dropped on remove() or with this object.
class scratch_source {
 public:
  explicit scratch_source(const std::string& server) {
    stores.create = [this, server](std::string_view label) {
      auto db = std::make_unique<scratch_db>(server, label);
      std::string uri = db->uri();
      std::lock_guard lock(mu_);
      dbs_[uri] = std::move(db);
      return uri;
    };
    stores.remove = [this](const std::string& uri) {
      std::lock_guard lock(mu_);
      dbs_.erase(uri);
    };
  }
  store_source stores;

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<scratch_db>> dbs_;
};

void pg_live_lag(const config& c) {
  auto facts = server_facts::read(c.backend);
  scratch_source source(c.backend);
  run_live_lag(c, source.stores, [&](figure& f) { facts.describe(f); });
}

// The rebuild's store: created through annals::open_store, then filled by hand (one COPY per
// ~100k events, synchronous_commit off for this setup only) with the rows the store writes,
// as the SQLite scenario does, with the same history (generate_bank_history).
struct pg_rebuild_dataset {
  std::unique_ptr<scratch_db> db;
  bank_history history;
  std::int64_t accounts = 0;
  double build_seconds = 0;
};

pg_rebuild_dataset make_pg_rebuild_dataset(const config& c) {
  pg_rebuild_dataset d;
  d.db = std::make_unique<scratch_db>(c.backend, "rebuild");
  d.accounts = std::max<std::int64_t>(1, std::min(c.rebuild_accounts, c.rebuild_events));
  note("building the rebuild dataset: {} events on {} accounts", c.rebuild_events, d.accounts);
  auto t0 = clock_type::now();
  { auto created = check(annals::open_store(d.db->uri()), "cannot open the store"); }
  pg_conn conn(d.db->uri());
  conn.exec("SET synchronous_commit = off");  // setup only
  conn.prepare("stream", "INSERT INTO annals_streams(name, version) VALUES ($1, -1) RETURNING id");
  auto n = static_cast<std::size_t>(d.accounts);
  std::vector<std::int64_t> sid(n, 0), version(n, -1);
  raw_ids ids;
  std::optional<copy_rows> rows;
  std::int64_t position = 0;
  auto flush = [&] {
    if (!rows) return;
    conn.copy_in("COPY annals_events(position, stream, stream_version, event_id, type, "
                 "recorded_at, metadata, payload) FROM STDIN (FORMAT binary)",
                 rows->done());
    rows.reset();
  };
  conn.exec("BEGIN");
  d.history = generate_bank_history(
      c.rebuild_events, d.accounts,
      [&](std::size_t i, const std::string& stream, const history_event* e, std::size_t k,
          std::int64_t at, std::int64_t) {
        if (sid[i] == 0) {
          auto r = conn.run("stream", pg_params().bytes(stream), true);
          sid[i] = get_int8(r.get(), 0, 0);
        }
        std::string cmd = ids.text();
        std::string metadata = raw_metadata(cmd, cmd);
        if (!rows) rows.emplace();
        for (std::size_t j = 0; j < k; ++j) {
          auto id = ids.next();
          rows->row(8);
          rows->int8(++position);
          rows->int8(sid[i]);
          rows->int8(++version[i]);
          rows->bytes({reinterpret_cast<const char*>(id.data()), id.size()});
          rows->bytes(*e[j].type);
          rows->int8(at);
          rows->bytes(metadata);
          rows->bytes(*e[j].payload);
        }
        if (position % 100000 < static_cast<std::int64_t>(k)) flush();
      });
  flush();
  conn.prepare("version", "UPDATE annals_streams SET version = $2 WHERE id = $1");
  for (std::size_t i = 0; i < n; ++i) {
    (void)conn.run("version", pg_params().int8(sid[i]).int8(version[i]));
  }
  conn.exec("COMMIT");
  conn.exec("VACUUM ANALYZE annals_events");
  d.build_seconds = seconds_since(t0);
  note("rebuild dataset: {} events in {} appends, {:.1f} s", d.history.events, d.history.appends,
       d.build_seconds);
  return d;
}

// The bank read models by hand on PostgreSQL: the three tables (the columns of the rows in
// samples/bank/projections.hpp) under other names, and the same statements per event as the
// bank projections run: account_balances reads the account's row and upserts it whole;
// account_statement reads the movement of the version before (else selects the latest one
// before) for the running balance and upserts the movement;
// daily_totals adds to the day's row in one INSERT ... ON CONFLICT DO UPDATE per event,
// pipelined (as the framework's sql_tx::write). As the framework's batch does
// (db/row_cache.hpp), a row read or written earlier in the same transaction is taken from
// memory, and the balance and movement rows are held and written before COMMIT as one
// multi-row upsert per table (an account's row once, however many events changed it).
std::string pg_models_ddl(std::string_view suffix) {
  return fmt::format(
      "CREATE TABLE bl_account_balances{0} (account_id TEXT NOT NULL PRIMARY KEY, owner TEXT NOT "
      "NULL, balance_cents BIGINT NOT NULL, transaction_count BIGINT NOT NULL, opened BOOLEAN "
      "NOT NULL, closed BOOLEAN NOT NULL, opened_at_us BIGINT NOT NULL, last_activity_us BIGINT "
      "NOT NULL, closed_at_us BIGINT);\n"
      "CREATE TABLE bl_account_statement{0} (account_id TEXT NOT NULL, stream_version BIGINT NOT "
      "NULL, recorded_at_us BIGINT NOT NULL, kind TEXT NOT NULL, amount_cents BIGINT NOT NULL, "
      "balance_after_cents BIGINT NOT NULL, memo TEXT NOT NULL, "
      "PRIMARY KEY (account_id, stream_version));\n"
      "CREATE TABLE bl_daily_totals{0} (day TEXT NOT NULL PRIMARY KEY, deposits_cents BIGINT NOT "
      "NULL, withdrawals_cents BIGINT NOT NULL, deposit_count BIGINT NOT NULL, withdrawal_count "
      "BIGINT NOT NULL);\n",
      suffix);
}

class pg_read_models {
 public:
  // A balance row as the baseline keeps it between statements of one transaction.
  struct balance {
    bool dirty = false;  // changed in this transaction, not yet written
    std::string owner;
    std::int64_t balance_cents = 0, transaction_count = 0;
    bool opened = true, closed = false;
    std::int64_t opened_at_us = 0, last_activity_us = 0;
    std::optional<std::int64_t> closed_at_us;
  };

  explicit pg_read_models(pg_conn& c) : c_(c) {
    c.prepare("find_balance",
              "SELECT owner, balance_cents, transaction_count, opened, closed, opened_at_us, "
              "last_activity_us, closed_at_us FROM bl_account_balances__new WHERE account_id = $1");
    c.prepare("find_movement",
              "SELECT balance_after_cents FROM bl_account_statement__new WHERE account_id = $1 "
              "AND stream_version = $2");
    c.prepare("previous_balance",
              "SELECT balance_after_cents FROM bl_account_statement__new WHERE account_id = $1 "
              "AND stream_version < $2 ORDER BY stream_version DESC LIMIT 1");
    c.prepare("write_balances",
              "INSERT INTO bl_account_balances__new (account_id, owner, balance_cents, "
              "transaction_count, opened, closed, opened_at_us, last_activity_us, closed_at_us) "
              "SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::bool[], "
              "$6::bool[], $7::int8[], $8::int8[], $9::int8[]) ON CONFLICT (account_id) DO UPDATE "
              "SET owner = excluded.owner, balance_cents = excluded.balance_cents, "
              "transaction_count = excluded.transaction_count, opened = excluded.opened, "
              "closed = excluded.closed, opened_at_us = excluded.opened_at_us, "
              "last_activity_us = excluded.last_activity_us, closed_at_us = excluded.closed_at_us");
    c.prepare("write_movements",
              "INSERT INTO bl_account_statement__new (account_id, stream_version, recorded_at_us, "
              "kind, amount_cents, balance_after_cents, memo) SELECT * FROM unnest($1::text[], "
              "$2::int8[], $3::int8[], $4::text[], $5::int8[], $6::int8[], $7::text[]) "
              "ON CONFLICT (account_id, stream_version) DO UPDATE SET "
              "recorded_at_us = excluded.recorded_at_us, kind = excluded.kind, "
              "amount_cents = excluded.amount_cents, "
              "balance_after_cents = excluded.balance_after_cents, memo = excluded.memo");
    c.prepare("add_to_day",
              "INSERT INTO bl_daily_totals__new AS t (day, deposits_cents, withdrawals_cents, "
              "deposit_count, withdrawal_count) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (day) DO "
              "UPDATE SET deposits_cents = t.deposits_cents + excluded.deposits_cents, "
              "withdrawals_cents = t.withdrawals_cents + excluded.withdrawals_cents, "
              "deposit_count = t.deposit_count + excluded.deposit_count, "
              "withdrawal_count = t.withdrawal_count + excluded.withdrawal_count");
  }

  void apply(std::string_view type, std::int64_t at, std::int64_t stream_version,
             std::string_view payload) {
    auto parse = [&](google::protobuf::Message& m) {
      if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        storage_failure(fmt::format("baseline: undecodable {} payload", type));
      }
    };
    if (type == type_deposited()) {
      parse(deposited_);
      money(deposited_.account_id(), at, stream_version, "deposit", deposited_.amount_cents(),
            deposited_.amount_cents());
    } else if (type == type_withdrawn()) {
      parse(withdrawn_);
      money(withdrawn_.account_id(), at, stream_version, "withdrawal", withdrawn_.amount_cents(),
            -withdrawn_.amount_cents());
    } else if (type == type_opened()) {
      parse(opened_);
      balance b;
      b.owner = bank::full_name(opened_.owner());
      b.opened_at_us = b.last_activity_us = at;
      put(opened_.account_id(), b);
    } else if (type == type_closed()) {
      parse(closed_);
      balance b = find(closed_.account_id());
      b.closed = true;
      b.last_activity_us = at;
      b.closed_at_us = at;
      put(closed_.account_id(), b);
    } else {
      storage_failure(fmt::format("baseline: unknown event type '{}'", type));
    }
  }

  // Before a transaction's COMMIT: the balance rows it changed and the movements it added, as
  // multi-row upserts of up to 1,000 rows (pipelined).
  void write() {
    constexpr std::size_t chunk = 1000;
    std::vector<std::pair<const std::string*, const balance*>> changed;
    for (auto& [account, b] : balances_) {
      if (b.dirty) changed.emplace_back(&account, &b);
      b.dirty = false;
    }
    for (std::size_t from = 0; from < changed.size(); from += chunk) {
      std::vector<pg_array> a(9, pg_array(pg_array::int8_oid));
      a[0] = a[1] = pg_array(pg_array::text_oid);
      a[4] = a[5] = pg_array(pg_array::bool_oid);
      for (std::size_t i = from; i < std::min(changed.size(), from + chunk); ++i) {
        const balance& b = *changed[i].second;
        a[0].bytes(*changed[i].first);
        a[1].bytes(b.owner);
        a[2].int8(b.balance_cents);
        a[3].int8(b.transaction_count);
        a[4].boolean(b.opened);
        a[5].boolean(b.closed);
        a[6].int8(b.opened_at_us);
        a[7].int8(b.last_activity_us);
        if (b.closed_at_us) {
          a[8].int8(*b.closed_at_us);
        } else {
          a[8].null();
        }
      }
      send_arrays("write_balances", a);
    }
    for (std::size_t from = 0; from < added_.size(); from += chunk) {
      std::vector<pg_array> a(7, pg_array(pg_array::int8_oid));
      a[0] = a[3] = a[6] = pg_array(pg_array::text_oid);
      for (std::size_t i = from; i < std::min(added_.size(), from + chunk); ++i) {
        const movement_row& m = added_[i];
        a[0].bytes(m.account);
        a[1].int8(m.version);
        a[2].int8(m.at);
        a[3].bytes(m.kind);
        a[4].int8(m.amount);
        a[5].int8(m.after);
        a[6].bytes("");  // no memo: not a transfer
      }
      send_arrays("write_movements", a);
    }
    added_.clear();
  }

  // A transaction ends: what was remembered of its rows is forgotten, as the framework's batch
  // forgets its rows.
  void new_batch() {
    balances_.clear();
    movements_.clear();
    added_.clear();
  }

 private:
  // The account's row: remembered from this transaction, else read.
  const balance& find(const std::string& account) {
    if (auto it = balances_.find(account); it != balances_.end()) return it->second;
    auto r = c_.run("find_balance", pg_params().bytes(account), true);
    if (PQntuples(r.get()) != 1) {
      logic_failure(fmt::format("baseline: account '{}' was never opened", account));
    }
    balance b;
    b.owner = std::string(get_bytes(r.get(), 0, 0));
    b.balance_cents = get_int8(r.get(), 0, 1);
    b.transaction_count = get_int8(r.get(), 0, 2);
    b.opened = *PQgetvalue(r.get(), 0, 3) != 0;
    b.closed = *PQgetvalue(r.get(), 0, 4) != 0;
    b.opened_at_us = get_int8(r.get(), 0, 5);
    b.last_activity_us = get_int8(r.get(), 0, 6);
    if (!PQgetisnull(r.get(), 0, 7)) b.closed_at_us = get_int8(r.get(), 0, 7);
    return balances_.insert_or_assign(account, std::move(b)).first->second;
  }

  // Held until write(): one row per account per transaction, however many events change it.
  void put(const std::string& account, balance b) {
    b.dirty = true;
    balances_.insert_or_assign(account, std::move(b));
  }

  void send_arrays(const std::string& statement, const std::vector<pg_array>& arrays) {
    std::vector<std::string> encoded;
    encoded.reserve(arrays.size());
    pg_params p;
    for (const auto& a : arrays) p.bytes(encoded.emplace_back(a.encode()));
    c_.send(statement, p);
  }

  // The balance after the account's movement at `version`, if it has one.
  std::optional<std::int64_t> movement(const std::string& account, std::int64_t version) {
    auto key = std::pair{account, version};
    if (auto it = movements_.find(key); it != movements_.end()) return it->second;
    auto r = c_.run("find_movement", pg_params().bytes(account).int8(version), true);
    std::optional<std::int64_t> out;
    if (PQntuples(r.get()) == 1) out = get_int8(r.get(), 0, 0);
    movements_.emplace(std::move(key), out);
    return out;
  }

  void money(const std::string& account, std::int64_t at, std::int64_t stream_version,
             std::string_view kind, std::int64_t amount, std::int64_t signed_amount) {
    {  // account_balances
      balance b = find(account);
      b.balance_cents += signed_amount;
      ++b.transaction_count;
      b.last_activity_us = at;
      put(account, b);
    }
    // account_statement: the running balance, from the movement of the version before, else
    // the latest one before
    std::int64_t before = 0;
    if (auto prev = movement(account, stream_version - 1)) {
      before = *prev;
    } else {
      auto r = c_.run("previous_balance", pg_params().bytes(account).int8(stream_version), true);
      if (PQntuples(r.get()) == 1) before = get_int8(r.get(), 0, 0);
    }
    added_.push_back(movement_row{account, stream_version, at, std::string(kind), amount,
                                  before + signed_amount});
    movements_.insert_or_assign(std::pair{account, stream_version}, before + signed_amount);
    bool deposit = signed_amount >= 0;  // daily_totals
    c_.send("add_to_day", pg_params()
                              .bytes(bank::utc_day(at))
                              .int8(deposit ? amount : 0)
                              .int8(deposit ? 0 : amount)
                              .int8(deposit ? 1 : 0)
                              .int8(deposit ? 0 : 1));
  }

  pg_conn& c_;
  std::unordered_map<std::string, balance> balances_;
  std::map<std::pair<std::string, std::int64_t>, std::optional<std::int64_t>> movements_;
  struct movement_row {
    std::string account;
    std::int64_t version, at;
    std::string kind;
    std::int64_t amount, after;
  };
  std::vector<movement_row> added_;  // held until write()
  bank::v2::AccountOpened opened_;
  bank::v1::MoneyDeposited deposited_;
  bank::v1::MoneyWithdrawn withdrawn_;
  bank::v1::AccountClosed closed_;
};

// The hand-written rebuild on one connection: fresh tables, then per transaction of `batch`
// events a libpq scan of the next events by position, parse, the statements above, COMMIT;
// then the swap (drop the old tables, rename the new ones) in one transaction.
double pg_raw_rebuild_once(const pg_rebuild_dataset& d, std::int64_t batch) {
  auto t0 = clock_type::now();
  pg_conn c(d.db->uri());
  c.exec("BEGIN; DROP TABLE IF EXISTS bl_account_balances__new, bl_account_statement__new, "
         "bl_daily_totals__new; " + pg_models_ddl("__new") + "COMMIT;");
  pg_read_models models(c);
  c.prepare("scan",
            "SELECT position, type, recorded_at, stream_version, payload FROM annals_events "
            "WHERE position > $1 ORDER BY position LIMIT $2");
  std::int64_t after = 0, n = 0;
  for (;;) {
    c.exec("BEGIN");
    auto r = c.run("scan", pg_params().int8(after).int8(batch), true);
    int rows = PQntuples(r.get());
    for (int i = 0; i < rows; ++i) {
      after = get_int8(r.get(), i, 0);
      models.apply(get_bytes(r.get(), i, 1), get_int8(r.get(), i, 2), get_int8(r.get(), i, 3),
                   get_bytes(r.get(), i, 4));
    }
    models.write();
    c.exec("COMMIT");
    models.new_batch();
    n += rows;
    if (rows < batch) break;
  }
  if (n != d.history.events) {
    logic_failure(fmt::format("baseline rebuild: {} events, not {}", n, d.history.events));
  }
  std::string swap = "BEGIN; ";
  for (const char* t : {"bl_account_balances", "bl_account_statement", "bl_daily_totals"}) {
    swap += fmt::format("DROP TABLE IF EXISTS {0}; ALTER TABLE {0}__new RENAME TO {0}; ", t);
  }
  c.exec(swap + "COMMIT;");
  auto r = c.query("SELECT coalesce(sum(balance_cents), 0)::int8 FROM bl_account_balances");
  if (get_int8(r.get(), 0, 0) != d.history.total_balance) {
    logic_failure(fmt::format("baseline rebuild: balances sum to {}, expected {}",
                              get_int8(r.get(), 0, 0), d.history.total_balance));
  }
  return seconds_since(t0);
}

void pg_rebuild(const config& c) {
  auto facts = server_facts::read(c.backend);
  auto d = make_pg_rebuild_dataset(c);
  const std::int64_t batch = annals::rebuild_options{}.batch_size;
  std::vector<std::string> names;
  for (const auto& p : bank::projections()) names.push_back(p->name);
  auto annals_once = [&] {
    auto t0 = clock_type::now();
    // What `bank --db URI projections rebuild NAME` does, for each of the three.
    auto runner = check(bank::open_read_models(d.db->uri()), "cannot open the projection runner");
    for (const auto& name : names) {
      auto rep = check(runner->rebuild(name), "rebuild");
      std::int64_t want = name == "account_balances" ? d.history.events : d.history.money_events;
      if (!rep.swapped || rep.events != want) {
        logic_failure(fmt::format("rebuild {}: {} events applied, {} expected", name, rep.events,
                                  want));
      }
    }
    double secs = seconds_since(t0);
    std::int64_t total = 0;  // untimed: the model adds up
    (void)check(bank::read_balances(*runner,
                                    [&](const bank::balance_row& r) {
                                      total += r.balance_cents;
                                      return true;
                                    }),
                "read_balances");
    if (total != d.history.total_balance) {
      logic_failure(fmt::format("rebuild: balances sum to {}, expected {}", total,
                                d.history.total_balance));
    }
    return secs;
  };
  figure f;
  f.scenario = "rebuild";
  f.events = f.baseline_events = d.history.events;
  f.target = 0.7;
  alternate(c.rebuild_reps(), annals_once, [&] { return pg_raw_rebuild_once(d, batch); },
            f.annals_seconds, f.baseline_seconds);
  f.extra.emplace_back("accounts", std::to_string(d.accounts));
  f.extra.emplace_back("money_events", std::to_string(d.history.money_events));
  f.extra.emplace_back("dataset_build_s", num(d.build_seconds, 1));
  facts.describe(f);
  f.note = fmt::format(
      "PostgreSQL: bank::open_read_models(uri) + projection_runner::rebuild of the three read "
      "models in turn, store of {} events on {} accounts (the SQLite scenario's history); "
      "baseline: one libpq connection, per {}-event transaction a scan of the next events by "
      "position, protobuf parse, the same statements per event on hand-written tables of the "
      "same columns (rows already read or written in the transaction taken from memory; balance "
      "and movement rows written before COMMIT as multi-row upserts, daily totals pipelined), "
      "then drop + rename (the baseline's balances are checked, untimed); {} reps "
      "per side",
      d.history.events, d.accounts, batch, c.rebuild_reps());
  print_figure(f);
}


// ---- scale: the store grown to c.scale_events --------------------------------------------------
//
// One store grown in c.scale_steps steps by 100-event appends (an account opened and 99
// deposits, each append a new stream, 4 threads sharing one store of pool 4), beside raw
// tables of the store's shape grown the same way by binary COPY (4 connections), in
// alternating blocks. At the start (a seed of up to 10,000 events) and after each step, three
// probes, each beside its raw libpq baseline in alternating blocks:
//   append: single-event appends to random existing streams, expected version exact; the
//     baseline does the raw INSERT loop's statements on the raw tables (of the same size);
//   read_stream: whole random streams through read_stream; the baseline selects the same rows
//     (every column the store returns) from the store's own tables, by the stream's id found
//     by its name first (two round trips, as the store);
//   load: annals::load<bank::account> of random streams, whole; the baseline reads type and
//     payload from the store's tables and folds them by hand (raw_folder).
// The last line ("scale") gives each probe's rate at the end over its rate at the start.

constexpr std::int64_t scale_append_events = 100;  // per fill append: opened + 99 deposits
constexpr int scale_threads = 4;

// The fill's payloads for stream k (the same on both sides): its account opened, 99 deposits.
std::vector<std::string> scale_payloads(std::int64_t k) {
  std::string id = account_id(k);
  std::vector<std::string> p;
  p.reserve(scale_append_events);
  p.push_back(opened_payload(id, k));
  for (std::int64_t i = 1; i < scale_append_events; ++i) {
    p.push_back(deposited_payload(id, 100 + (k * 7 + i * 13) % 10000));
  }
  return p;
}
const std::string& scale_type(std::int64_t i) { return i == 0 ? type_opened() : type_deposited(); }
std::string scale_stream(std::int64_t k) { return fmt::format("account-{}", account_id(k)); }

class scale_run {
 public:
  scale_run(const config& c)
      : c_(c), annals_db_(c.backend, "scale_annals"), raw_db_(c.backend, "scale_raw") {
    annals::postgres_options o;
    o.pool_size = scale_threads;
    store_ = check(annals::open_postgres_store(annals_db_.uri(), std::move(o)),
                   "cannot open the store");
    for (int t = 0; t < scale_threads; ++t) {
      auto& conn = *raw_.emplace_back(std::make_unique<pg_conn>(raw_db_.uri()));
      if (t == 0) conn.exec(raw_schema);
      conn.prepare("find", "SELECT id, version FROM streams WHERE name = $1");
      conn.prepare("new_stream", "INSERT INTO streams(name, version) VALUES ($1, $2) RETURNING id");
      conn.prepare("move_stream", "UPDATE streams SET version = $2 WHERE id = $1");
      conn.prepare("insert_event",
                   "INSERT INTO events(position, stream, stream_version, event_id, type, "
                   "recorded_at, metadata, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
    }
    reader_ = std::make_unique<pg_conn>(annals_db_.uri());
    reader_->prepare("stream", "SELECT id FROM annals_streams WHERE name = $1");
    // The store's statement shape (a page of up to $3 rows from version $2 on), so both sides
    // get the same plan: an ordered index scan.
    const char* rows = " FROM annals_events WHERE stream = $1 AND stream_version >= $2 ORDER BY "
                       "stream_version LIMIT $3";
    reader_->prepare("read", std::string("SELECT position, stream_version, event_id, type, "
                                         "recorded_at, metadata, payload, checksum") + rows);
    reader_->prepare("fold", std::string("SELECT type, payload") + rows);
    ids_.resize(scale_threads);
  }

  std::int64_t events() const { return streams_ * scale_append_events + probe_appends_; }

  // Grows both sides by `n` events (whole appends) in alternating blocks; adds each side's
  // seconds per `per` events to the samples.
  void grow(std::int64_t n, std::int64_t per, std::vector<double>& annals_s,
            std::vector<double>& raw_s) {
    const std::int64_t appends = std::max<std::int64_t>(1, n / scale_append_events);
    const std::int64_t block = std::max<std::int64_t>(scale_threads, 20000 / scale_append_events);
    double a = 0, r = 0;
    for (std::int64_t done = 0, b = 0; done < appends; done += block, ++b) {
      std::int64_t first = streams_ + done, count = std::min(block, appends - done);
      auto side_a = [&] { a += timed([&] { fill_annals(first, count); }); };
      auto side_r = [&] { r += timed([&] { fill_raw(first, count); }); };
      if (b % 2 == 0) side_a(), side_r();
      else side_r(), side_a();
    }
    streams_ += appends;
    versions_.resize(static_cast<std::size_t>(streams_), scale_append_events - 1);
    raw_versions_.resize(static_cast<std::size_t>(streams_), scale_append_events - 1);
    const double scale = static_cast<double>(per) / static_cast<double>(appends * scale_append_events);
    annals_s.push_back(a * scale);
    raw_s.push_back(r * scale);
  }

  // The three probes at the present size; prints a line each.
  struct probe_rates {
    double append = 0, read = 0, load = 0;            // Annals, per second
    double raw_append = 0, raw_read = 0, raw_load = 0;  // baselines
  };
  probe_rates probe(const std::function<void(figure&)>& describe) {
    probe_rates out;
    const int blocks = c_.quick ? 4 : 16;
    const std::int64_t per = c_.quick ? 25 : 200;  // operations per block
    auto line = [&](std::string_view what, std::vector<double> a, std::vector<double> r,
                    std::string_view note_text, double& rate, double& raw_rate) {
      figure f;
      f.scenario = fmt::format("scale_{}", what);
      f.events = f.baseline_events = per;
      f.annals_seconds = std::move(a);
      f.baseline_seconds = std::move(r);
      for (std::size_t i = 0; i < f.annals_seconds.size(); ++i) {
        f.block_ratios.push_back(f.baseline_seconds[i] / f.annals_seconds[i]);
      }
      f.extra.emplace_back("store_events", std::to_string(events()));
      f.extra.emplace_back("streams", std::to_string(streams_));
      f.note = fmt::format("PostgreSQL scale probe at {} events: {} operations per block, {} "
                           "blocks alternating sides; rates are operations/s; {}",
                           events(), per, blocks, note_text);
      describe(f);
      rate = static_cast<double>(per) / median(f.annals_seconds);
      raw_rate = static_cast<double>(per) / median(f.baseline_seconds);
      print_figure(f);
    };
    struct probe_kind {
      std::string_view what;
      void (scale_run::*annals)(std::int64_t);
      void (scale_run::*raw)(std::int64_t);
      std::string_view note;
      double probe_rates::*rate;
      double probe_rates::*raw_rate;
    };
    static constexpr probe_kind kinds[] = {
        {"append", &scale_run::append_annals, &scale_run::append_raw,
         "single-event appends to random existing streams, expected version exact, through the "
         "store; baseline: BEGIN, select the stream row, update it, one INSERT, COMMIT on raw "
         "tables of the same size",
         &probe_rates::append, &probe_rates::raw_append},
        {"read_stream", &scale_run::read_annals, &scale_run::read_raw,
         "read_stream of whole random streams (100+ events); baseline: the stream's id by its "
         "name, then one prepared SELECT of every column the store returns, binary results",
         &probe_rates::read, &probe_rates::raw_read},
        {"load", &scale_run::load_annals, &scale_run::load_raw,
         "annals::load<bank::account> (no snapshots) of whole random streams; baseline: the "
         "stream's id by its name, then SELECT type, payload, folded by hand",
         &probe_rates::load, &probe_rates::raw_load},
    };
    for (const auto& k : kinds) {
      std::vector<double> a, r;
      alternate(blocks, [&] { return timed([&] { (this->*k.annals)(per); }); },
                [&] { return timed([&] { (this->*k.raw)(per); }); }, a, r);
      line(k.what, std::move(a), std::move(r), k.note, out.*k.rate, out.*k.raw_rate);
    }
    return out;
  }

  // Untimed: both sides hold what was appended.
  void check_sizes() {
    auto head = check(store_->head_position(), "head_position");
    auto r = raw_[0]->query("SELECT count(*)::int8 FROM events");
    if (head != events() || get_int8(r.get(), 0, 0) != events()) {
      logic_failure(fmt::format("scale: store holds {}, raw tables {}, {} appended", head,
                                get_int8(r.get(), 0, 0), events()));
    }
  }

  std::string sizes() {
    auto r = reader_->query_text(
        "SELECT pg_total_relation_size('annals_events'), pg_relation_size('annals_events'), "
        "pg_indexes_size('annals_events'), pg_database_size(current_database())");
    return fmt::format(R"({{"events_total_bytes":{},"events_heap_bytes":{},)"
                       R"("events_index_bytes":{},"database_bytes":{}}})",
                       PQgetvalue(r.get(), 0, 0), PQgetvalue(r.get(), 0, 1),
                       PQgetvalue(r.get(), 0, 2), PQgetvalue(r.get(), 0, 3));
  }

 private:
  template <class F>
  static double timed(F&& f) {
    auto t0 = clock_type::now();
    f();
    return seconds_since(t0);
  }
  // Streams [first, first + count), appends split over the threads.
  void fill_annals(std::int64_t first, std::int64_t count) {
    run_on_threads(scale_threads, [&](int t) {
      for (std::int64_t k = first + t; k < first + count; k += scale_threads) {
        auto payloads = scale_payloads(k);
        std::vector<annals::event_data> batch(payloads.size());
        for (std::size_t i = 0; i < payloads.size(); ++i) {
          batch[i].type = scale_type(static_cast<std::int64_t>(i));
          batch[i].payload = std::move(payloads[i]);
        }
        auto r = check(store_->append(scale_stream(k), annals::expected_version::no_stream(),
                                      std::move(batch)),
                       "append");
        if (r.stream_version != scale_append_events - 1) logic_failure("scale: wrong version");
      }
    });
  }
  void fill_raw(std::int64_t first, std::int64_t count) {
    run_on_threads(scale_threads, [&](int t) {
      pg_conn& conn = *raw_[static_cast<std::size_t>(t)];
      auto& ids = ids_[static_cast<std::size_t>(t)];
      for (std::int64_t k = first + t; k < first + count; k += scale_threads) {
        auto payloads = scale_payloads(k);
        conn.exec("BEGIN");
        auto found = conn.run("find", pg_params().bytes(scale_stream(k)), true);
        if (PQntuples(found.get()) != 0) logic_failure("baseline: stream exists");
        auto made = conn.run("new_stream",
                             pg_params().bytes(scale_stream(k)).int8(scale_append_events - 1), true);
        std::int64_t sid = get_int8(made.get(), 0, 0);
        std::int64_t position = next_position_.fetch_add(scale_append_events) + 1;
        std::int64_t at = now_us();
        copy_rows rows;
        for (std::int64_t i = 0; i < scale_append_events; ++i) {
          auto id = ids.next();
          rows.row(8);
          rows.int8(position + i);
          rows.int8(sid);
          rows.int8(i);
          rows.bytes({reinterpret_cast<const char*>(id.data()), id.size()});
          rows.bytes(scale_type(i));
          rows.int8(at);
          rows.null();
          rows.bytes(payloads[static_cast<std::size_t>(i)]);
        }
        conn.copy_in("COPY events(position, stream, stream_version, event_id, type, recorded_at, "
                     "metadata, payload) FROM STDIN (FORMAT binary)",
                     rows.done());
        conn.exec("COMMIT");
      }
    });
  }

  std::int64_t pick() { return static_cast<std::int64_t>(rng_() % static_cast<std::uint64_t>(streams_)); }

  void append_annals(std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
      auto k = pick();
      auto& v = versions_[static_cast<std::size_t>(k)];
      annals::event_data e;
      e.type = type_deposited();
      e.payload = deposited_payload(account_id(k), 100);
      v = check(store_->append(scale_stream(k), annals::expected_version::exact(v), {std::move(e)}),
                "append")
              .stream_version;
      ++probe_appends_;
    }
  }
  void append_raw(std::int64_t n) {
    pg_conn& conn = *raw_[0];
    for (std::int64_t i = 0; i < n; ++i) {
      auto k = pick();
      std::string name = scale_stream(k);
      auto& v = raw_versions_[static_cast<std::size_t>(k)];
      conn.exec("BEGIN");
      auto found = conn.run("find", pg_params().bytes(name), true);
      if (PQntuples(found.get()) != 1 || get_int8(found.get(), 0, 1) != v) {
        logic_failure(fmt::format("baseline: conflict on {}", name));
      }
      std::int64_t sid = get_int8(found.get(), 0, 0);
      (void)conn.run("move_stream", pg_params().int8(sid).int8(v + 1));
      auto id = ids_[0].next();
      (void)conn.run("insert_event",
                     pg_params()
                         .int8(next_position_.fetch_add(1) + 1)
                         .int8(sid)
                         .int8(v + 1)
                         .bytes({reinterpret_cast<const char*>(id.data()), id.size()})
                         .bytes(type_deposited())
                         .int8(now_us())
                         .null()
                         .bytes(deposited_payload(account_id(k), 100)));
      conn.exec("COMMIT");
      ++v;
    }
  }
  void read_annals(std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
      auto k = pick();
      std::int64_t seen = 0, bytes = 0;
      (void)check(store_->read_stream(scale_stream(k), {},
                                      [&](const annals::recorded_event& e) {
                                        ++seen;
                                        bytes += static_cast<std::int64_t>(e.payload.size());
                                        return true;
                                      }),
                  "read_stream");
      if (seen != versions_[static_cast<std::size_t>(k)] + 1 || bytes == 0) {
        logic_failure(fmt::format("scale: read {} events of {}", seen, scale_stream(k)));
      }
    }
  }
  void read_raw(std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
      auto k = pick();
      auto r = reader_->run("read", pg_params().int8(stream_id(k)).int8(0).int8(2048), true);
      std::int64_t bytes = 0;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        bytes += static_cast<std::int64_t>(get_bytes(r.get(), row, 6).size());
      }
      if (PQntuples(r.get()) != versions_[static_cast<std::size_t>(k)] + 1 || bytes == 0) {
        logic_failure("baseline: short read");
      }
    }
  }
  // The stream's id by its name, as the store looks it up first (a round trip each).
  std::int64_t stream_id(std::int64_t k) {
    auto r = reader_->run("stream", pg_params().bytes(scale_stream(k)), true);
    if (PQntuples(r.get()) != 1) logic_failure("baseline: no such stream");
    return get_int8(r.get(), 0, 0);
  }
  void load_annals(std::int64_t n) {
    annals::load_options o;
    o.use_snapshots = false;
    for (std::int64_t i = 0; i < n; ++i) {
      auto k = pick();
      auto l = check(annals::load<bank::account>(*store_, scale_stream(k), o), "load");
      if (l.version != versions_[static_cast<std::size_t>(k)] || !l.state.opened) {
        logic_failure(fmt::format("scale: load of {} at version {}", scale_stream(k), l.version));
      }
    }
  }
  void load_raw(std::int64_t n) {
    raw_folder folder;
    for (std::int64_t i = 0; i < n; ++i) {
      auto k = pick();
      auto r = reader_->run("fold", pg_params().int8(stream_id(k)).int8(0).int8(2048), true);
      bank::account a;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        folder.apply(a, get_bytes(r.get(), row, 0), get_bytes(r.get(), row, 1));
      }
      if (PQntuples(r.get()) != versions_[static_cast<std::size_t>(k)] + 1 || !a.opened) {
        logic_failure("baseline: wrong fold");
      }
    }
  }

  const config& c_;
  scratch_db annals_db_, raw_db_;
  std::unique_ptr<annals::event_store> store_;
  std::vector<std::unique_ptr<pg_conn>> raw_;  // one per fill thread; [0] also probes
  std::unique_ptr<pg_conn> reader_;            // raw reads of the store's tables
  std::deque<raw_ids> ids_;
  std::atomic<std::int64_t> next_position_{0};
  std::int64_t streams_ = 0, probe_appends_ = 0;
  std::vector<std::int64_t> versions_, raw_versions_;  // per stream: each side's version
  std::mt19937_64 rng_{2026};
};

void pg_scale(const config& c) {
  auto facts = server_facts::read(c.backend);
  auto describe = [&](figure& f) { facts.describe(f); };
  scale_run run(c);
  const std::int64_t step = std::max<std::int64_t>(scale_append_events,
                                                   c.scale_events / c.scale_steps);
  note("scale: growing a store to {} events in {} steps", c.scale_events, c.scale_steps);
  std::vector<double> fill_a, fill_r;
  // The seed ("empty"): a tenth of a step, 100 to 10,000 events. Step k then grows the store
  // to k / steps of the final size.
  run.grow(std::clamp<std::int64_t>(step / 10, scale_append_events, 10000), step, fill_a, fill_r);
  fill_a.clear(), fill_r.clear();
  auto first = run.probe(describe);
  auto last = first;
  for (int k = 1; k <= c.scale_steps; ++k) {
    const std::int64_t target = c.scale_events * k / c.scale_steps;
    if (target - run.events() < scale_append_events) continue;
    auto t0 = clock_type::now();
    run.grow(target - run.events(), step, fill_a, fill_r);
    note("scale: {} events ({:.0f} s for the step)", run.events(), seconds_since(t0));
    last = run.probe(describe);
  }
  run.check_sizes();
  figure f;
  f.scenario = "scale";
  f.events = f.baseline_events = step;
  f.annals_seconds = fill_a;
  f.baseline_seconds = fill_r;
  for (std::size_t i = 0; i < fill_a.size(); ++i) f.block_ratios.push_back(fill_r[i] / fill_a[i]);
  auto flat = [](double end, double start) { return num(start > 0 ? end / start : 0, 3); };
  f.extra.emplace_back("store_events", std::to_string(run.events()));
  f.extra.emplace_back("append_end_over_start", flat(last.append, first.append));
  f.extra.emplace_back("read_stream_end_over_start", flat(last.read, first.read));
  f.extra.emplace_back("load_end_over_start", flat(last.load, first.load));
  f.extra.emplace_back("baseline_append_end_over_start", flat(last.raw_append, first.raw_append));
  f.extra.emplace_back("baseline_read_end_over_start", flat(last.raw_read, first.raw_read));
  f.extra.emplace_back("baseline_load_end_over_start", flat(last.raw_load, first.raw_load));
  // The machine's speed drifts over a run of minutes, and moves both sides alike: each probe's
  // ratio to its baseline at the end over that ratio at the start cancels the drift.
  auto relative = [&](double scale_run::probe_rates::*a, double scale_run::probe_rates::*b) {
    return flat(last.*a / last.*b, first.*a / first.*b);
  };
  f.extra.emplace_back("append_ratio_end_over_start",
                       relative(&scale_run::probe_rates::append, &scale_run::probe_rates::raw_append));
  f.extra.emplace_back("read_stream_ratio_end_over_start",
                       relative(&scale_run::probe_rates::read, &scale_run::probe_rates::raw_read));
  f.extra.emplace_back("load_ratio_end_over_start",
                       relative(&scale_run::probe_rates::load, &scale_run::probe_rates::raw_load));
  f.extra.emplace_back("sizes", run.sizes());
  describe(f);
  f.note = fmt::format(
      "PostgreSQL: a store grown to {} events in steps of {}, by 100-event appends (4 threads, "
      "one store of pool 4, each append a new stream), beside raw tables grown by binary COPY "
      "(4 connections); samples are per step (events/s of that step's fill; the first step "
      "starts from the seed); *_end_over_start: each "
      "probe's median rate at the end over the one at the start (target: 0.8 to 1.2); "
      "*_ratio_end_over_start: (Annals / baseline at the end) / (Annals / baseline at the start)",
      run.events(), step);
  print_figure(f);
}

}  // namespace

bool is_postgres_uri(std::string_view uri) {
  return uri.starts_with("postgresql://") || uri.starts_with("postgres://");
}

const std::vector<std::string>& pg_scenario_names() {
  static const std::vector<std::string> names = {
      "append_single", "append_batch", "append_concurrent", "rebuild", "live_lag", "scale"};
  return names;
}

void run_pg_scenario(const std::string& name, const config& c) {
  if (name == "append_single") {
    pg_append_single(c);
  } else if (name == "append_batch") {
    pg_append_batch(c);
  } else if (name == "append_concurrent") {
    pg_append_concurrent(c);
  } else if (name == "rebuild") {
    pg_rebuild(c);
  } else if (name == "live_lag") {
    pg_live_lag(c);
  } else if (name == "scale") {
    pg_scale(c);
  } else {
    throw bench_failure{2, fmt::format("no PostgreSQL scenario '{}'", name)};
  }
}

}  // namespace annals_bench
