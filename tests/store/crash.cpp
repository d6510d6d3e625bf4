// Crashes: a child process appends in a loop with default durability and reports every
// acknowledged append through a pipe; the parent SIGKILLs it mid-write, reopens the store and
// checks that every acknowledged event survived and the file is sound. Several rounds run on
// the same file, so later children also recover what earlier ones left behind.
#include "store/backends.hpp"

#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace annals;
using namespace annals::test;

namespace {

// One acknowledged event as the child reported it.
struct ack {
  std::string event_id;
  std::string stream;
  std::int64_t version = -1;
  std::int64_t position = 0;  // known for the last event of each append only; 0 otherwise
};


// The child: appends batches of events with fresh ids to a few streams from two threads (so
// kills also land inside shared group commits) and, after each acknowledged append, writes
// one line per event: "id stream version position", in one write() per append. Lines of the
// two threads never interleave: small appends' writes are shorter than PIPE_BUF (atomic), and
// large appends hold a mutex while writing.
//
// Every payload starts with "<first id of its append> <index> <count>|", so the parent can
// check that even unacknowledged appends are whole or absent. With `large`, appends hold
// 50-300 events of 1-8 KiB, so a kill is likely to land inside a big transaction.
int appender_child(const std::string& path, int fd, unsigned seed, bool large) {
  auto opened = open_sqlite_store(path);  // default options: durability::full
  if (!opened) return 10;
  auto& store = *opened.value();
  std::atomic<bool> failed{false};
  std::mutex write_mu;
  auto work = [&](unsigned s) {
    std::mt19937 rng(s);
    while (!failed) {
      std::string stream = "crash-" + std::to_string(rng() % 3);
      int n = large ? 50 + static_cast<int>(rng() % 250) : 1 + static_cast<int>(rng() % 4);
      std::vector<event_data> evs;
      std::string first_id;
      for (int i = 0; i < n; ++i) {
        auto id = new_uuid_v7();
        if (i == 0) first_id = id;
        std::string payload = first_id + " " + std::to_string(i) + " " + std::to_string(n) + "|";
        payload.append(large ? 1024 + rng() % 7168 : 64 + rng() % 512, 'x');
        evs.push_back(make_event("test.v1.Crash", std::move(payload), id));
      }
      std::vector<std::string> ids;
      for (const auto& e : evs) ids.push_back(e.event_id);
      auto r = store.append(stream, expected_version::any(), std::move(evs));
      if (!r) {
        failed = true;
        return;
      }
      std::string lines;
      for (int i = 0; i < n; ++i) {
        lines += ids[i] + " " + stream + " " + std::to_string(r->stream_version - (n - 1 - i)) +
                 " " + std::to_string(i == n - 1 ? r->position : 0) + "\n";
      }
      std::lock_guard lock(write_mu);
      if (!write_all(fd, lines)) {
        failed = true;
        return;
      }
    }
  };
  std::thread other(work, seed * 2 + 1);
  work(seed * 2);
  other.join();
  return 20;  // only reached if an append failed: the parent expects SIGKILL instead
}

std::vector<ack> parse_acks(const std::string& text) {
  std::vector<ack> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream l(line);
    ack a;
    if (l >> a.event_id >> a.stream >> a.version >> a.position) out.push_back(a);
  }
  return out;
}

// Reads a pipe to EOF on its own thread; counts complete lines as they arrive.
class pipe_reader {
 public:
  explicit pipe_reader(int fd) : fd_(fd), thread_([this] { run(); }) {}
  ~pipe_reader() {
    if (thread_.joinable()) thread_.join();
  }
  // Waits until at least `n` lines arrived or `timeout` passed; returns the line count.
  std::size_t wait_for_lines(std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return lines_ >= n || eof_; });
    return lines_;
  }
  std::string finish() {
    thread_.join();
    ::close(fd_);
    return text_;
  }

 private:
  void run() {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard lock(mu_);
      if (n <= 0) {
        eof_ = true;
        cv_.notify_all();
        return;
      }
      for (ssize_t i = 0; i < n; ++i) lines_ += buf[i] == '\n';
      text_.append(buf, static_cast<std::size_t>(n));
      cv_.notify_all();
    }
  }
  int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  std::size_t lines_ = 0;
  bool eof_ = false;
  std::thread thread_;
};

// PRAGMA integrity_check on the file, through SQLite directly.
std::string integrity_check(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  std::string out;
  if (rc != SQLITE_OK) {
    out = std::string("cannot open: ") + sqlite3_errstr(rc);
  } else {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) {
        if (!out.empty()) out += "; ";
        out += reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      }
    } else {
      out = std::string("cannot prepare: ") + sqlite3_errmsg(db);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close_v2(db);
  return out;
}

}  // namespace

TEST_CASE("kill -9 during appends loses no acknowledged event and leaves a sound store") {
  temp_dir dir;
  const auto path = dir.file("crash.db");
  std::vector<ack> every_ack;  // over all rounds
  std::mt19937 rng(2024);
  constexpr int rounds = 6;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t pid = fork_child([&, w = p[1], r = p[0]]() -> int {
      ::close(r);
      return appender_child(path, w, static_cast<unsigned>(round + 1), round % 2 == 0);
    });
    ::close(p[1]);
    pipe_reader reader(p[0]);
    // Round 0 kills as early as possible, possibly while the store is being created; the
    // others once appends are flowing, after a random 10-80 ms more.
    if (round > 0) {
      auto got = reader.wait_for_lines(1, std::chrono::seconds(10));
      REQUIRE(got >= 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 70));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    }
    REQUIRE(::kill(pid, SIGKILL) == 0);
    CHECK(wait_child(pid) == 128 + SIGKILL);  // killed, not exited on an append error
    auto acks = parse_acks(reader.finish());
    MESSAGE("round " << round << ": " << acks.size() << " acknowledged events before the kill");
    if (round > 0) CHECK(acks.size() >= 1);
    every_ack.insert(every_ack.end(), acks.begin(), acks.end());

    {
      auto store = open_sqlite_store(path);
      INFO(describe(store));
      REQUIRE(store.ok());
      auto all = check_store_invariants(**store);
      std::map<std::string, const recorded_event*> by_id;
      for (const auto& e : all) by_id[e.event_id] = &e;
      CHECK(by_id.size() == all.size());  // event ids unique
      std::size_t missing = 0, misplaced = 0;
      for (const auto& a : every_ack) {
        auto it = by_id.find(a.event_id);
        if (it == by_id.end()) {
          ++missing;
          continue;
        }
        const auto& e = *it->second;
        if (e.stream_id != a.stream || e.stream_version != a.version ||
            (a.position != 0 && e.position != a.position)) {
          ++misplaced;
        }
      }
      CHECK(missing == 0);
      CHECK(misplaced == 0);
      // Acknowledged or not, every append is whole: its events are all there, in order, at
      // consecutive versions of one stream.
      struct group {
        std::int64_t count = 0, seen = 0;
        const recorded_event* first = nullptr;
        bool ordered = true;
      };
      std::map<std::string, group> groups;
      std::size_t malformed = 0;
      for (const auto& e : all) {
        if (e.type != "test.v1.Crash") continue;
        std::istringstream in(e.payload.substr(0, e.payload.find('|')));
        std::string first;
        std::int64_t index = -1, count = -1;
        if (!(in >> first >> index >> count)) {
          ++malformed;
          continue;
        }
        auto& g = groups[first];
        if (!g.first) g.first = &e, g.count = count;
        g.ordered = g.ordered && index == g.seen && e.stream_id == g.first->stream_id &&
                    e.stream_version == g.first->stream_version + index && count == g.count;
        ++g.seen;
      }
      CHECK(malformed == 0);
      std::size_t torn = 0;
      for (const auto& [first, g] : groups) torn += !(g.ordered && g.seen == g.count);
      CHECK_MESSAGE(torn == 0, torn << " of " << groups.size() << " appends are torn");
      CHECK(all.size() >= every_ack.size());
      // The reopened store takes appends again and continues the sequence.
      auto head = must((*store)->head_position());
      auto r = must((*store)->append("after-round-" + std::to_string(round),
                                     expected_version::no_stream(), make_events(1)));
      CHECK(r.position == head + 1);
    }
    CHECK(integrity_check(path) == "ok");
  }
}
