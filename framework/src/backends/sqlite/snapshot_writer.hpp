// Snapshot storage of the SQLite store (annals_snapshots, docs/storage-format.md).
//
// Reads use a connection of their own. Saves go to a bounded queue (store::snapshot_queue)
// served by one background thread with its own connection and a short busy timeout, so a save
// never waits for the store's write lock on the caller's thread and never fails a caller: a
// full queue drops the save, a failed write is reported on stderr and dropped. Upserts keep the
// higher version. The destructor flushes the queue for at most `flush_timeout`, then drops
// what is left.
//
// Thread safety: read() and save() may be called from any thread.
#pragma once

#include "backends/sqlite/sqlite.hpp"
#include "store/snapshot_queue.hpp"

#include <annals/event_store.hpp>

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace annals::sqlite {

struct snapshot_writer_options {
  // saves waiting; more are dropped
  std::size_t max_queued = store::snapshot_queue::default_max_queued;
  std::chrono::milliseconds busy_timeout{200};    // per write, waiting for the write lock
  // the destructor's wait for queued saves
  std::chrono::milliseconds flush_timeout = store::snapshot_queue::default_flush_timeout;
};

class snapshot_writer {
 public:
  // `path`: the store's file. `read_only`: saves are dropped silently.
  snapshot_writer(std::string path, bool read_only, snapshot_writer_options options = {});
  snapshot_writer(const snapshot_writer&) = delete;
  snapshot_writer& operator=(const snapshot_writer&) = delete;

  result<std::optional<snapshot_record>> read(std::string_view stream_id, std::string_view key);
  void save(snapshot_record snapshot) noexcept { queue_.save(std::move(snapshot)); }

 private:
  result<void> write(const snapshot_record& s);  // on the queue's thread

  const std::string path_;
  const snapshot_writer_options options_;

  std::mutex read_mu_;
  connection reader_;  // opened on first read
  statement select_;
  bool no_table_ = false;  // a store without annals_snapshots: no snapshot, ever

  connection writer_;  // the queue's thread's only, opened on its first save
  statement upsert_;
  store::snapshot_queue queue_;  // last: destroyed (flushed, joined) before writer_
};

}  // namespace annals::sqlite
