#include "backends/sqlite/snapshot_writer.hpp"

#include "store/prepared.hpp"

namespace annals::sqlite {
namespace {

constexpr const char* select_sql =
    "SELECT version, state, taken_at FROM annals_snapshots WHERE stream = ?1 AND key = ?2";
// Keeps the higher version; an equal one replaces the stored snapshot (which may be the
// corrupt one a load just fell back from). A stored snapshot claiming a version beyond the
// stream's end is not a snapshot of this stream (a load ignores it): any save replaces it, or
// it would block every later save and force a full replay on every load.
constexpr const char* upsert_sql =
    "INSERT INTO annals_snapshots(stream, key, version, state, taken_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(stream, key) DO UPDATE SET "
    "version = excluded.version, state = excluded.state, taken_at = excluded.taken_at "
    "WHERE excluded.version >= annals_snapshots.version OR annals_snapshots.version > "
    "coalesce((SELECT version FROM streams WHERE name = excluded.stream), -1)";

bool has_snapshot_table(sqlite3* db) {
  auto st = statement::prepare(
      db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'annals_snapshots'");
  return st && st->step() == SQLITE_ROW;
}

}  // namespace

snapshot_writer::snapshot_writer(std::string path, bool read_only, snapshot_writer_options o)
    : path_(std::move(path)),
      options_(o),
      queue_([this](const snapshot_record& s) { return write(s); }, read_only, o.max_queued,
             o.flush_timeout) {}

result<std::optional<snapshot_record>> snapshot_writer::read(std::string_view stream_id,
                                                             std::string_view key) {
  if (auto r = store::check_stream_id(stream_id); !r) return r.error();
  std::lock_guard lock(read_mu_);
  if (no_table_) return std::optional<snapshot_record>{};
  if (!reader_.get()) {
    auto c = connection::open(path_, SQLITE_OPEN_READONLY,
                              static_cast<int>(options_.busy_timeout.count()));
    if (!c) return std::move(c).error();
    if (!has_snapshot_table(c->get())) {
      no_table_ = true;
      return std::optional<snapshot_record>{};
    }
    auto st = statement::prepare(c->get(), select_sql);
    if (!st) return std::move(st).error();
    reader_ = std::move(c).value();
    select_ = std::move(st).value();
  }
  reset_guard g(select_);
  select_.bind(1, stream_id);
  select_.bind(2, key);
  int rc = select_.step();
  if (rc == SQLITE_DONE) return std::optional<snapshot_record>{};
  if (rc != SQLITE_ROW) return make_error(rc, "cannot read a snapshot", reader_.get());
  snapshot_record s;
  s.stream_id = std::string(stream_id);
  s.key = std::string(key);
  s.version = select_.column_int64(0);
  s.state.assign(select_.column_blob(1));
  s.taken_at_us = select_.column_int64(2);
  return std::optional<snapshot_record>{std::move(s)};
}

result<void> snapshot_writer::write(const snapshot_record& s) {
  if (!writer_.get()) {
    auto c = connection::open(path_, SQLITE_OPEN_READWRITE,
                              static_cast<int>(options_.busy_timeout.count()));
    if (!c) return std::move(c).error();
    if (!has_snapshot_table(c->get())) {
      return error(errc::io, "the store has no annals_snapshots table (an older format)");
    }
    // Snapshots are derived data: losing the last ones to a power cut costs a replay.
    (void)c->exec("PRAGMA synchronous=NORMAL", "set durability");
    auto st = statement::prepare(c->get(), upsert_sql);
    if (!st) return std::move(st).error();
    writer_ = std::move(c).value();
    upsert_ = std::move(st).value();
  }
  reset_guard g(upsert_);
  upsert_.bind(1, s.stream_id);
  upsert_.bind(2, s.key);
  upsert_.bind(3, s.version);
  upsert_.bind(4, statement::blob{s.state.data(), s.state.size()});
  upsert_.bind(5, store::system_clock_us());
  int rc = upsert_.step();
  if (rc != SQLITE_DONE) return make_error(rc, "cannot save a snapshot", writer_.get());
  return {};
}

}  // namespace annals::sqlite
