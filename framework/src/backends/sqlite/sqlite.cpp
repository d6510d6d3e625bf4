#include "backends/sqlite/sqlite.hpp"

#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <thread>

namespace annals::sqlite {

errc kind_of(int rc) noexcept {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return errc::busy;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_FORMAT:
      return errc::corruption;
    case SQLITE_READONLY:
      return errc::read_only;
    default:
      return errc::io;
  }
}

error make_error(int rc, std::string_view what, sqlite3* db) {
  // sqlite3_errmsg may mention a table or column, never the statement text; the SQL itself
  // is not part of the message.
  const char* detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  auto kind = kind_of(rc);
  if (kind == errc::busy) {
    return error(kind, fmt::format("{}: the store stayed locked by another connection past the "
                                   "busy timeout ({})",
                                   what, detail));
  }
  if ((rc & 0xff) == SQLITE_FULL) {
    return error(kind, fmt::format("{}: disk full: the file system holding the store has no "
                                   "space left ({})",
                                   what, detail));
  }
  if ((rc & 0xff) == SQLITE_READONLY) {
    return error(kind, fmt::format("{}: the store is read-only here (a read-only file, file "
                                   "system or mount, or an immutable file); open it read-only "
                                   "to read it ({})",
                                   what, detail));
  }
  if (kind == errc::corruption) {
    return error(kind, fmt::format("{}: the store file is damaged or is not an Annals store ({})",
                                   what, detail));
  }
  return error(kind, fmt::format("{}: {}", what, detail));
}

namespace {
// A WAL store needs its -shm file, which a read-only file system cannot hold: SQLite then
// cannot read the store at all. There, when no WAL content waits to be checkpointed, a
// read-only connection opens the file as immutable (SQLite reads it without the -shm file and
// without locks: nothing can write through a read-only mount). With a non-empty -wal file it
// opens normally, so committed events in the WAL are never skipped.
bool read_only_file_system_without_wal(const std::string& path) {
  struct statvfs fs {};
  if (::statvfs(path.c_str(), &fs) != 0 || !(fs.f_flag & ST_RDONLY)) return false;
  struct stat wal {};
  return ::stat((path + "-wal").c_str(), &wal) != 0 || wal.st_size == 0;
}

std::string immutable_uri(const std::string& path) {
  std::string uri = "file:";
  for (char ch : path) {
    if (ch == '%' || ch == '?' || ch == '#') {
      uri += fmt::format("%{:02X}", static_cast<unsigned char>(ch));
    } else {
      uri += ch;
    }
  }
  return uri + "?immutable=1";
}
}  // namespace

result<connection> connection::open(const std::string& path, int flags, int busy_timeout_ms) {
  connection c;
  std::string name = path;
  if ((flags & SQLITE_OPEN_READONLY) && !(flags & SQLITE_OPEN_READWRITE) &&
      read_only_file_system_without_wal(path)) {
    name = immutable_uri(path);
    flags |= SQLITE_OPEN_URI;
  }
  int rc = sqlite3_open_v2(name.c_str(), &c.db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    return make_error(rc, fmt::format("cannot open store file '{}'", path), c.db_);
  }
  sqlite3_extended_result_codes(c.db_, 1);
  c.busy_ = std::make_unique<busy_wait>();
  c.busy_->timeout = std::chrono::milliseconds(busy_timeout_ms);
  sqlite3_busy_handler(c.db_, &connection::on_busy, c.busy_.get());
  return c;
}

// SQLite's own busy_timeout sleeps 1, 2, 5, 10, ... up to 100 ms between tries, which adds
// milliseconds of latency whenever two connections (a store and a projection runner) take turns
// at the write lock. This polls every 50-1000 us instead, until the timeout.
int connection::on_busy(void* arg, int count) noexcept {
  auto* w = static_cast<busy_wait*>(arg);
  auto now = std::chrono::steady_clock::now();
  if (count == 0) w->started = now;
  if (now - w->started >= w->timeout) return 0;  // give up: the caller gets SQLITE_BUSY
  auto pause = std::chrono::microseconds(count < 20 ? 50 : count < 200 ? 200 : 1000);
  std::this_thread::sleep_for(pause);
  return 1;
}

result<void> connection::exec(const char* sql, std::string_view what) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return make_error(rc, what, db_);
  return {};
}

result<statement> statement::prepare(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  if (rc != SQLITE_OK) return make_error(rc, "cannot prepare a store query", db);
  return statement(s);
}

result<void> statement::prepare_all(sqlite3* db, std::initializer_list<to_prepare> items) {
  for (const auto& [into, sql] : items) {
    auto p = prepare(db, sql);
    if (!p) return std::move(p).error();
    *into = std::move(p).value();
  }
  return {};
}

std::string identity(sqlite3* db) {
  const char* file = sqlite3_db_filename(db, "main");
  std::string path = file ? file : "";
  struct stat st {};
  if (!path.empty() && ::stat(path.c_str(), &st) == 0) {
    return fmt::format("sqlite:{}:{}", static_cast<unsigned long long>(st.st_dev),
                       static_cast<unsigned long long>(st.st_ino));
  }
  return "sqlite:" + path;  // an in-memory or vanished database: its name, if any
}

}  // namespace annals::sqlite
