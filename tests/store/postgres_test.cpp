// PostgreSQL-specific store cases (the backend-independent ones are in conformance.cpp).
// Each case gets a fresh database on the ANNALS_TEST_PG server (backends.hpp).
#include "store/backends.hpp"

#include <annals/append_watch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <latch>
#include <optional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace annals;
using namespace annals::test;

TEST_CASE("postgres: a follower polling $all sees every position once and in order while "
          "writers in separate stores append concurrently") {
  postgres_backend backend;
  constexpr int writers = 6, threads_per_writer = 3, appends = 40;
  // Every writer has its own store object, hence its own connections: its transactions
  // overlap the others' as separate processes' would. Each is shared by a few threads, whose
  // appends it commits in groups.
  std::vector<std::unique_ptr<event_store>> stores;
  for (int t = 0; t < writers; ++t) stores.push_back(backend.open());
  auto follower_store = backend.open();

  std::mutex mu;
  std::vector<std::string> problems;
  std::set<std::int64_t> acknowledged;
  std::atomic<int> writers_left{writers * threads_per_writer};
  std::vector<std::int64_t> seen;
  std::atomic<int> polls{0};

  std::thread follower([&] {
    std::int64_t last = 0;
    for (;;) {
      bool writers_done = writers_left.load() == 0;
      read_all_options o;
      o.from_position = last + 1;
      ++polls;
      auto r = follower_store->read_all(o, [&](const recorded_event& e) {
        if (e.position != last + 1) {
          std::lock_guard lock(mu);
          problems.push_back("follower at " + std::to_string(last) + " got position " +
                             std::to_string(e.position));
        }
        seen.push_back(e.position);
        last = e.position;
        return true;
      });
      if (!r) {
        std::lock_guard lock(mu);
        problems.push_back("follower read failed: " + describe(r));
        return;
      }
      // One more full read after the last writer finished: then every acknowledged event
      // is committed and must have been seen.
      if (writers_done) return;
    }
  });

  std::vector<std::thread> pool;
  for (int t = 0; t < writers * threads_per_writer; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(7 + t));
      for (int i = 0; i < appends; ++i) {
        int n = 1 + static_cast<int>(rng() % 3);
        auto r = stores[t % writers]->append("w" + std::to_string(rng() % 8),
                                             expected_version::any(), make_events(n));
        std::lock_guard lock(mu);
        if (!r) {
          problems.push_back("append failed: " + describe(r));
          break;
        }
        for (std::int64_t p = r->position - n + 1; p <= r->position; ++p) {
          if (!acknowledged.insert(p).second) {
            problems.push_back("position " + std::to_string(p) + " acknowledged twice");
          }
        }
      }
      --writers_left;
    });
  }
  for (auto& th : pool) th.join();
  follower.join();

  INFO("first problem: " << (problems.empty() ? std::string("none") : problems.front()));
  CHECK(problems.empty());
  const auto total = static_cast<std::int64_t>(acknowledged.size());
  CHECK(total > writers * threads_per_writer * appends);
  // Exactly 1..total, each once, in order, and exactly the acknowledged positions.
  REQUIRE(static_cast<std::int64_t>(seen.size()) == total);
  bool in_order = true;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    in_order = in_order && seen[i] == static_cast<std::int64_t>(i) + 1;
  }
  CHECK(in_order);
  CHECK(std::set<std::int64_t>(seen.begin(), seen.end()) == acknowledged);
  CHECK(must(follower_store->head_position()) == total);
  check_store_invariants(*follower_store);
  MESSAGE("follower polls while writing: " << polls.load() << ", events: " << total);
}

TEST_CASE("postgres: racing no_stream appends from separate stores: exactly one wins, the "
          "others get a conflict") {
  postgres_backend backend;
  constexpr int racers = 6;
  std::vector<std::unique_ptr<event_store>> stores;
  for (int t = 0; t < racers; ++t) stores.push_back(backend.open());
  std::vector<std::optional<errc>> outcomes(racers);
  std::vector<std::thread> pool;
  for (int t = 0; t < racers; ++t) {
    pool.emplace_back([&, t] {
      outcomes[t] = kind_of(stores[t]->append("one", expected_version::no_stream(),
                                              make_events(2, "r" + std::to_string(t))));
    });
  }
  for (auto& th : pool) th.join();
  int won = 0, conflicts = 0;
  for (const auto& o : outcomes) {
    if (!o) ++won;
    if (o == errc::concurrency_conflict) ++conflicts;
  }
  CHECK(won == 1);
  CHECK(conflicts == racers - 1);
  CHECK(must(stores[0]->stream_version("one")) == 1);
  check_store_invariants(*stores[0]);
}

TEST_CASE("postgres: an unreachable server is an io error") {
  auto r = open_postgres_store("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2");
  CHECK(kind_of(r) == errc::io);
  auto via_uri = open_store("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2");
  CHECK(kind_of(via_uri) == errc::io);
}

TEST_CASE("postgres: a database without a store is not_found when creation is off") {
  postgres_backend backend;
  postgres_options o;
  o.create_if_missing = false;
  CHECK(kind_of(open_postgres_store(backend.uri(), o)) == errc::not_found);
  auto store = backend.open();  // creates it
  must(store->append("s", expected_version::no_stream(), make_events(1)));
  auto again = open_postgres_store(backend.uri(), o);
  REQUIRE(again.ok());
  CHECK(must((*again)->head_position()) == 1);
}

namespace {
// The store's write lock (pg_store.cpp, docs/storage-format.md).
const std::string write_lock_key = "4705784748973228033";  // 0x414E4E4C00000001

// Waits until some backend other than `except` waits for a lock; returns its pid (0 on
// timeout).
int wait_for_blocked_backend(pg::session& s, int except) {
  for (int i = 0; i < 500; ++i) {
    auto pid = s.exec(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> $1 "
        "AND datname = current_database() LIMIT 1",
        {std::to_string(except)});
    if (!pid.empty()) return std::stoi(pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}
}  // namespace

TEST_CASE("postgres: a writer held off past lock_timeout_ms gets busy, and succeeds once the "
          "lock is free") {
  postgres_backend backend;
  auto setup = backend.open();  // creates the tables
  postgres_options o;
  o.lock_timeout_ms = 300;
  auto opened = open_postgres_store(backend.uri(), o);
  REQUIRE(opened.ok());
  auto& store = *opened.value();

  pg::session holder(backend.uri());
  holder.exec("SELECT pg_advisory_lock($1::int8)", {write_lock_key});
  auto start = std::chrono::steady_clock::now();
  auto r = store.append("s", expected_version::no_stream(), make_events(1));
  auto waited = std::chrono::steady_clock::now() - start;
  INFO(describe(r));
  CHECK(kind_of(r) == errc::busy);
  CHECK(waited >= std::chrono::milliseconds(250));
  CHECK(must(store.head_position()) == 0);

  holder.exec("SELECT pg_advisory_unlock($1::int8)", {write_lock_key});
  auto ok = must(store.append("s", expected_version::no_stream(), make_events(1)));
  CHECK(ok.position == 1);
  check_store_invariants(store);
}

TEST_CASE("postgres: a connection dropped mid-append leaves nothing half-written and the store "
          "keeps working") {
  postgres_backend backend;
  auto store = backend.open();
  must(store->append("before", expected_version::no_stream(), make_events(2)));

  // 1200 events are inserted in three statements. Another session inserts, without
  // committing, a row with the id of event 700: the append's second statement waits on it,
  // with its stream row and first 500 events already written in its transaction. Then its
  // connection is killed.
  std::vector<event_data> events;
  for (int i = 0; i < 1200; ++i) {
    events.push_back(make_event("test.v1.Thing", "big" + std::to_string(i), uuid(1000 + i)));
  }
  std::string blocking_id_hex = uuid(1000 + 700);
  blocking_id_hex.erase(std::remove(blocking_id_hex.begin(), blocking_id_hex.end(), '-'),
                        blocking_id_hex.end());
  pg::session other(backend.uri());
  other.exec("BEGIN");
  auto other_stream = other.exec(
      "INSERT INTO annals_streams(name, version) VALUES ('other'::bytea, 0) RETURNING id");
  other.exec(
      "INSERT INTO annals_events(position, stream, stream_version, event_id, type, recorded_at, "
      "payload) VALUES (1000000, $1, 0, decode($2, 'hex'), 'test.v1.Thing', 0, ''::bytea)",
      {other_stream, blocking_id_hex});

  std::optional<result<append_result>> outcome;
  std::thread appender(
      [&] { outcome.emplace(store->append("big", expected_version::no_stream(), events)); });
  pg::session killer(backend.uri());
  int victim = wait_for_blocked_backend(killer, other.backend_pid());
  REQUIRE(victim != 0);
  // Half-written: its transaction holds rows the others cannot see yet.
  CHECK(killer.exec("SELECT pg_terminate_backend($1)", {std::to_string(victim)}) == "t");
  appender.join();
  other.exec("ROLLBACK");

  REQUIRE(outcome.has_value());
  INFO(describe(*outcome));
  CHECK(kind_of(*outcome) == errc::io);
  MESSAGE("the killed append reported: " << describe(*outcome));
  CHECK(must(store->stream_version("big")) == -1);
  CHECK(must(store->head_position()) == 2);
  // The pool dropped the dead connection: the same store appends again.
  auto again = must(store->append("big", expected_version::no_stream(), events));
  CHECK(again.position == 1202);
  CHECK(again.stream_version == 1199);
  auto all = check_store_invariants(*store);
  CHECK(all.size() == 1202);
}

TEST_CASE("postgres: processes doing read-modify-append on shared streams lose no update") {
  postgres_backend backend;
  backend.open();  // the tables exist before the children race
  temp_dir dir;
  constexpr int processes = 4, increments = 40;
  const std::vector<std::string> streams{"counter-a", "counter-b"};
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(fork_child([&, p]() -> int {
      // A new store in the child: nothing opened before fork() is used here.
      auto opened = open_postgres_store(backend.uri());
      if (!opened) return 10;
      auto& s = *opened.value();
      std::mt19937 rng(static_cast<unsigned>(p));
      long conflicts = 0;
      for (int i = 0; i < increments; ++i) {
        const auto& stream = streams[rng() % streams.size()];
        for (int attempt = 0;; ++attempt) {
          if (attempt > 10000) return 11;
          std::int64_t version = -1, counter = 0;
          auto read = s.read_stream(stream, {.dir = direction::backward, .max_count = 1},
                                    [&](const recorded_event& e) {
                                      version = e.stream_version;
                                      counter = std::stoll(e.payload);
                                      return false;
                                    });
          if (!read) return 12;
          auto ev = version < 0 ? expected_version::no_stream() : expected_version::exact(version);
          auto r = s.append(stream, ev,
                            {make_event("test.v1.Counter", std::to_string(counter + 1))});
          if (r) break;
          if (r.error().kind() != errc::concurrency_conflict) return 13;
          ++conflicts;
        }
      }
      std::FILE* f = std::fopen(dir.file("conflicts-" + std::to_string(p)).c_str(), "w");
      if (!f) return 14;
      std::fprintf(f, "%ld\n", conflicts);
      std::fclose(f);
      return 0;
    }));
  }
  for (auto pid : children) CHECK(wait_child(pid) == 0);

  auto store = backend.open();
  std::int64_t total = 0;
  for (const auto& stream : streams) {
    auto evs = read_stream_vec(*store, stream);
    bool ok = true;
    for (std::size_t i = 0; i < evs.size(); ++i) {
      ok = ok && evs[i].stream_version == static_cast<std::int64_t>(i) &&
           evs[i].payload == std::to_string(i + 1);
    }
    CHECK_MESSAGE(ok, "stream " << stream << " has a lost or repeated update");
    total += static_cast<std::int64_t>(evs.size());
  }
  CHECK(total == processes * increments);
  long conflicts = 0;
  for (int p = 0; p < processes; ++p) {
    std::FILE* f = std::fopen(dir.file("conflicts-" + std::to_string(p)).c_str(), "r");
    long n = 0;
    if (f && std::fscanf(f, "%ld", &n) == 1) conflicts += n;
    if (f) std::fclose(f);
  }
  MESSAGE("conflicts detected and retried across processes: " << conflicts);
  check_store_invariants(*store);
}

TEST_CASE("postgres: a store keeps at most pool_size connections open between calls") {
  postgres_backend backend;
  postgres_options o;
  o.pool_size = 2;
  auto opened = open_postgres_store(backend.uri(), o);
  REQUIRE(opened.ok());
  auto& store = *opened.value();
  must(store.append("s", expected_version::no_stream(), make_events(3)));
  // Nested reads need several connections at once: a visitor that reads again, 4 deep.
  std::function<void(int)> nest = [&](int depth) {
    if (depth == 0) return;
    auto n = store.read_stream("s", {}, [&](const recorded_event&) {
      nest(depth - 1);
      return false;
    });
    CHECK(n.ok());
  };
  nest(4);
  pg::session watcher(backend.uri());
  // Closed connections' backends exit asynchronously: wait (bounded) for them to go.
  std::string open_now;
  for (int i = 0; i < 200; ++i) {
    open_now = watcher.exec(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> "
        "pg_backend_pid()");
    if (open_now == "2") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(open_now == "2");
  // The pooled ones still work.
  CHECK(must(store.head_position()) == 3);
}

TEST_CASE("postgres: snapshots round-trip; a lower version is ignored unless the stored one is "
          "beyond the stream's end; a save blocked by a row lock neither blocks nor fails") {
  postgres_backend backend;
  auto saved = [&](std::int64_t version, std::string state) {
    auto s = backend.open();
    s->save_snapshot({"acc-1", "k", version, std::move(state), 0});
  };  // destroying the store flushes the save
  auto stored = [&]() {
    auto s = backend.open();
    return must(s->read_snapshot("acc-1", "k"));
  };
  auto store = backend.open();
  CHECK_FALSE(must(store->read_snapshot("acc-1", "k")).has_value());
  must(store->append("acc-1", expected_version::any(), make_events(10)));  // versions 0..9

  saved(5, std::string("five\0bytes", 10));
  auto s = stored();
  REQUIRE(s.has_value());
  CHECK(s->stream_id == "acc-1");
  CHECK(s->key == "k");
  CHECK(s->version == 5);
  CHECK(s->state == std::string("five\0bytes", 10));
  CHECK(s->taken_at_us > 0);
  CHECK_FALSE(must(store->read_snapshot("acc-1", "other key")).has_value());

  saved(3, "three");  // lower: ignored
  CHECK(stored()->state == std::string("five\0bytes", 10));
  saved(5, "five again");  // equal: replaces (it may be the corrupt one a load fell back from)
  CHECK(stored()->state == "five again");
  saved(100, "beyond");  // higher, though beyond the end: stored (a load will ignore it)
  CHECK(stored()->version == 100);
  saved(9, "nine");  // lower, but the stored one is beyond the stream's end: replaced
  CHECK(stored()->version == 9);
  CHECK(stored()->state == "nine");

  // Another session locks the row: the save waits at most the writer's lock_timeout, then is
  // dropped with a warning; the caller returns at once.
  pg::session locker(backend.uri());
  locker.exec("BEGIN");
  locker.exec("SELECT version FROM annals_snapshots FOR UPDATE");
  {
    auto writer = backend.open();
    auto t0 = std::chrono::steady_clock::now();
    writer->save_snapshot({"acc-1", "k", 9, "blocked", 0});
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(100));
    auto r = writer->append("acc-1", expected_version::any(), make_events(1));
    CHECK(r.ok());
  }  // the flush gives up on the locked row within its bounded wait
  locker.exec("ROLLBACK");
  CHECK(stored()->state == "nine");
}

TEST_CASE("postgres: 4 processes of 16 threads append while two followers read $all: every "
          "acknowledged event is seen once, in one order both agree on") {
  // Each child's 16 threads share one store object, so their appends go in group commits;
  // the four children's commits interleave on the write lock. The followers (threads of this
  // process, started after the children were forked) read $all from their last position.
  postgres_backend backend;
  backend.open();  // the tables exist before the children race
  temp_dir dir;
  constexpr int processes = 4, threads = 16, appends = 15;
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(fork_child([&, p]() -> int {
      postgres_options o;
      o.pool_size = threads;
      auto opened = open_postgres_store(backend.uri(), std::move(o));
      if (!opened) return 10;
      auto& s = *opened.value();
      std::mutex mu;
      std::vector<std::pair<std::int64_t, std::int64_t>> ranges;  // acknowledged positions
      std::atomic<bool> failed{false};
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          std::mt19937 rng(static_cast<unsigned>(p * 100 + t));
          for (int i = 0; i < appends; ++i) {
            const int n = 1 + static_cast<int>(rng() % 3);
            auto r = s.append("p" + std::to_string(p) + "-" + std::to_string(rng() % 6),
                              expected_version::any(), make_events(n));
            if (!r) {
              failed = true;
              return;
            }
            std::lock_guard lock(mu);
            ranges.emplace_back(r->position - n + 1, r->position);
          }
        });
      }
      for (auto& th : pool) th.join();
      if (failed) return 11;
      std::FILE* f = std::fopen(dir.file("acked-" + std::to_string(p)).c_str(), "w");
      if (!f) return 12;
      for (auto [first, last] : ranges) std::fprintf(f, "%lld %lld\n", first, last);
      return std::fclose(f) == 0 ? 0 : 13;
    }));
  }

  std::atomic<bool> children_done{false};
  struct followed {
    std::vector<std::string> ids;  // event ids in the order read; [i] is position i + 1
    std::string problem;
  };
  auto follow = [&](followed& out) {
    auto s = backend.open();
    std::int64_t last = 0;
    for (;;) {
      const bool done = children_done.load();
      read_all_options o;
      o.from_position = last + 1;
      auto r = s->read_all(o, [&](const recorded_event& e) {
        if (e.position != last + 1 && out.problem.empty()) {
          out.problem = "after " + std::to_string(last) + " came " + std::to_string(e.position);
        }
        last = e.position;
        out.ids.push_back(e.event_id);
        return true;
      });
      if (!r) {
        out.problem = "read failed: " + describe(r);
        return;
      }
      if (done) return;  // one full read after every child ended
      if (r.value() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  followed a, b;
  std::thread fa([&] { follow(a); });
  std::thread fb([&] { follow(b); });
  for (auto pid : children) CHECK(wait_child(pid) == 0);
  children_done = true;
  fa.join();
  fb.join();

  CHECK(a.problem == "");
  CHECK(b.problem == "");
  std::multiset<std::int64_t> acked;
  for (int p = 0; p < processes; ++p) {
    std::FILE* f = std::fopen(dir.file("acked-" + std::to_string(p)).c_str(), "r");
    REQUIRE(f != nullptr);
    long long first = 0, last = 0;
    while (std::fscanf(f, "%lld %lld", &first, &last) == 2) {
      for (auto pos = first; pos <= last; ++pos) acked.insert(pos);
    }
    std::fclose(f);
  }
  const auto total = static_cast<std::int64_t>(acked.size());
  CHECK(total >= processes * threads * appends);
  // Each acknowledged position once, and they are exactly 1..total.
  CHECK(std::set<std::int64_t>(acked.begin(), acked.end()).size() == acked.size());
  CHECK(*acked.begin() == 1);
  CHECK(*acked.rbegin() == total);
  CHECK(static_cast<std::int64_t>(a.ids.size()) == total);
  CHECK(a.ids == b.ids);
  CHECK(std::set<std::string>(a.ids.begin(), a.ids.end()).size() == a.ids.size());
  auto store = backend.open();
  CHECK(must(store->head_position()) == total);
  check_store_invariants(*store);
}

TEST_CASE("postgres: an append_watch is woken by another process's append (LISTEN/NOTIFY)") {
  postgres_backend backend;
  backend.open();
  const std::string uri = backend.uri();
  waiting_child child([uri]() -> int {  // forked now, while this process has one thread
    auto s = open_postgres_store(uri);
    if (!s) return 10;
    return (*s)->append("from-child", expected_version::any(), make_events(1)) ? 0 : 11;
  });
  auto watch = must(append_watch::open(store_ref(uri)));
  // The watch notes once that it listens (appends may have been missed before): wait for it,
  // so that the child's append is one it can only learn of by NOTIFY.
  auto wait_past = [&](std::uint64_t mark) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (watch->mark() == mark && std::chrono::steady_clock::now() < deadline) {
      watch->wait(mark, std::chrono::seconds(1));
    }
    return watch->mark() != mark;
  };
  REQUIRE(wait_past(0));
  const auto listening = watch->mark();
  child.release();
  CHECK(child.wait() == 0);
  CHECK(wait_past(listening));
}

TEST_CASE("postgres: concurrent appends of large events are split into statements by size and "
          "stay whole") {
  // Appends of four 3 MiB events from 8 threads at once: a group commit that holds six or more
  // of them passes the 64 MiB one INSERT statement may carry, so an append's events then span
  // two statements (which batches form depends on timing; usually the first appender leads
  // alone and the other seven queue behind it).
  postgres_backend backend;
  auto store = backend.open();
  constexpr int threads = 8, appends = 1, per_append = 4;
  const std::string big(3u << 20, 'x');
  std::mutex mu;
  std::vector<std::string> problems;
  std::latch start(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < appends; ++i) {
        std::vector<event_data> events;
        for (int k = 0; k < per_append; ++k) {
          events.push_back(make_event("test.v1.Big", big + std::to_string(t * 100 + i * 10 + k)));
        }
        auto r = store->append("big-" + std::to_string(t), expected_version::any(),
                               std::move(events));
        if (!r) {
          std::lock_guard lock(mu);
          problems.push_back(describe(r));
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  INFO("first problem: " << (problems.empty() ? std::string("none") : problems.front()));
  CHECK(problems.empty());
  auto all = check_store_invariants(*store);
  CHECK(all.size() == threads * appends * per_append);
  for (int t = 0; t < threads; ++t) {
    auto evs = read_stream_vec(*store, "big-" + std::to_string(t));
    REQUIRE(evs.size() == appends * per_append);
    for (int i = 0; i < appends; ++i) {
      for (int k = 0; k < per_append; ++k) {
        CHECK(evs[i * per_append + k].payload == big + std::to_string(t * 100 + i * 10 + k));
      }
    }
  }
}
