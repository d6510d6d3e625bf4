#include "backends/sqlite/snapshot_writer.hpp"

#include "store/prepared.hpp"

#include <fmt/format.h>

#include <cstdio>

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
    : path_(std::move(path)), read_only_(read_only), options_(o) {}

snapshot_writer::~snapshot_writer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    flush_deadline_ = std::chrono::steady_clock::now() + options_.flush_timeout;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

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

void snapshot_writer::save(snapshot_record snapshot) noexcept {
  if (read_only_) return;
  try {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= options_.max_queued) return;  // dropped: best effort
    queue_.push_back(std::move(snapshot));
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  } catch (...) {
    return;  // no memory or no thread: the snapshot is dropped, the caller goes on
  }
  cv_.notify_one();
}

result<void> snapshot_writer::write(statement& upsert, sqlite3* db, const snapshot_record& s) {
  reset_guard g(upsert);
  upsert.bind(1, s.stream_id);
  upsert.bind(2, s.key);
  upsert.bind(3, s.version);
  upsert.bind(4, statement::blob{s.state.data(), s.state.size()});
  upsert.bind(5, store::system_clock_us());
  int rc = upsert.step();
  if (rc != SQLITE_DONE) return make_error(rc, "cannot save a snapshot", db);
  return {};
}

void snapshot_writer::run() noexcept {
  connection conn;
  statement upsert;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    if (stopping_ && std::chrono::steady_clock::now() >= flush_deadline_) {
      queue_.clear();  // the bounded flush is over: drop the rest
      return;
    }
    snapshot_record s = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    result<void> r;
    if (!conn.get()) {
      auto c = connection::open(path_, SQLITE_OPEN_READWRITE,
                                static_cast<int>(options_.busy_timeout.count()));
      if (c && has_snapshot_table(c->get())) {
        // Snapshots are derived data: losing the last ones to a power cut costs a replay.
        (void)c->exec("PRAGMA synchronous=NORMAL", "set durability");
        auto st = statement::prepare(c->get(), upsert_sql);
        if (st) {
          conn = std::move(c).value();
          upsert = std::move(st).value();
        } else {
          r = std::move(st).error();
        }
      } else {
        r = c ? error(errc::io, "the store has no annals_snapshots table (an older format)")
              : std::move(c).error();
      }
    }
    if (r && conn.get()) r = write(upsert, conn.get(), s);
    if (!r) {
      std::fprintf(stderr, "annals: warning: snapshot of stream '%s' at version %lld not saved: %s\n",
                   s.stream_id.c_str(), static_cast<long long>(s.version),
                   r.error().message().c_str());
    }
    lock.lock();
  }
}

}  // namespace annals::sqlite
