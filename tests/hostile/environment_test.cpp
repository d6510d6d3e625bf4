// A hostile environment around a good SQLite store: a full file system, a read-only file or
// mount, a file locked by another process past the busy timeout.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "hostile/hostile_support.hpp"

using namespace hostile;
namespace fs = std::filesystem;

namespace {

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A store of `n` events in stream "s" (ids uuid(1..n)), closed.
void make_store(const std::string& path, int n) {
  auto s = must(open_sqlite_store(path));
  std::vector<event_data> evs;
  for (int i = 1; i <= n; ++i)
    evs.push_back(make_event("test.v1.Thing", "e" + std::to_string(i), uuid(i)));
  must(s->append("s", expected_version::no_stream(), std::move(evs)));
}

// `chattr +i` on a file for the scope (root only); undone on destruction.
struct immutable_file {
  std::string path;
  bool ok = false;
  explicit immutable_file(std::string p) : path(std::move(p)) {
    ok = run({"/usr/bin/chattr", "+i", path}).exit_code == 0;
  }
  ~immutable_file() {
    if (ok) run({"/usr/bin/chattr", "-i", path});
  }
};

}  // namespace

// ---- full disk ----------------------------------------------------------------------------

TEST_CASE(
    "a full disk: the failing append is io 'disk full', acknowledged events survive, "
    "appends go on once there is space") {
  temp_dir dir;
  const std::string mnt = dir.file("small");
  fs::create_directory(mnt);
  scoped_mount m;
  std::string why;
  if (!m.mount("tmpfs", mnt, "tmpfs", 0, "size=2m", why) && skip_without_root(why)) return;
  const std::string path = mnt + "/store.db";
  std::vector<std::string> acknowledged;  // payloads, in position order
  std::string failure;
  {
    auto store = must(open_sqlite_store(path));
    for (int i = 1; i <= 2000; ++i) {
      auto payload = random_bytes(8 * 1024, static_cast<unsigned>(i));
      auto r = store->append("s" + std::to_string(i % 7), expected_version::any(),
                             {make_event("test.v1.Fill", payload, uuid(i))});
      if (!r) {
        INFO(describe(r));
        CHECK(kind_of(r) == errc::io);
        failure = r.error().message();
        break;
      }
      acknowledged.push_back(payload);
    }
    REQUIRE_MESSAGE(!failure.empty(), "2000 appends of 8 KiB fit in a 2 MiB file system");
    CHECK(contains(failure, "disk full"));
    MESSAGE("disk full after " << acknowledged.size() << " appends: " << failure);
    // Later appends fail the same way; what was acknowledged reads back exactly.
    for (int k = 0; k < 3; ++k) {
      auto again = store->append("t", expected_version::any(),
                                 {make_event("test.v1.Fill", random_bytes(8 * 1024, 99))});
      CHECK(kind_of(again) == errc::io);
    }
    std::vector<std::string> payloads;
    must(store->read_all({}, [&](const recorded_event& e) {
      payloads.push_back(e.payload);
      return true;
    }));
    CHECK(payloads == acknowledged);
    // The read-only tool works on the full file system.
    auto verify = annals_tool(path, {"verify"});
    INFO(verify.out << verify.err);
    CHECK(verify.exit_code == 0);
  }  // closed while full: its checkpoint may not fit, nothing may be lost
  // Reopened while still full: it opens and reads, or fails cleanly.
  {
    auto r = open_sqlite_store(path);
    if (r) {
      CHECK(must((*r)->head_position()) == static_cast<std::int64_t>(acknowledged.size()));
    } else {
      INFO(describe(r));
      CHECK(kind_of(r) == errc::io);
    }
  }
  // More space (a remount with a bigger size keeps the files): every acknowledged event is
  // there, verify passes, appends go on.
  REQUIRE(::mount("tmpfs", mnt.c_str(), "tmpfs", MS_REMOUNT, "size=16m") == 0);
  {
    auto store = must(open_sqlite_store(path));
    auto all = read_all_vec(*store);
    REQUIRE(all.size() == acknowledged.size());
    for (std::size_t i = 0; i < all.size(); ++i) {
      CHECK(all[i].payload == acknowledged[i]);
      CHECK(all[i].event_id == uuid(i + 1));
    }
    auto r = store->append("after", expected_version::no_stream(), make_events(3));
    INFO(describe(r));
    CHECK(r.ok());
  }
  auto verify = annals_tool(path, {"verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  auto stats = annals_tool(path, {"stats"});
  CHECK(contains(stats.out, "events           " + std::to_string(acknowledged.size() + 3)));
}

// ---- read-only files ------------------------------------------------------------------------

namespace {
// On a store that cannot be written: a writable open either fails or its appends fail, with
// read_only and a message that says read-only; read_only opens read; the tools read; bank deposit
// exits 4; the file is unchanged.
void check_unwritable(const std::string& path) {
  const auto before = read_file(path);
  auto rw = open_sqlite_store(path);
  if (rw) {
    auto a = (*rw)->append("s", expected_version::any(), make_events(1));
    INFO("append: " << describe(a));
    CHECK(kind_of(a) == errc::read_only);
    if (!a) CHECK(contains(a.error().message(), "read-only"));
    CHECK(must((*rw)->head_position()) == 5);
  } else {
    INFO("open: " << describe(rw));
    CHECK(kind_of(rw) == errc::read_only);
    CHECK(contains(rw.error().message(), "read-only"));
  }
  sqlite_options o;
  o.read_only = true;
  auto ro = open_sqlite_store(path, o);
  INFO("read-only open: " << describe(ro));
  REQUIRE(ro.ok());
  auto all = read_all_vec(**ro);
  REQUIRE(all.size() == 5);
  CHECK(all[4].event_id == uuid(5));
  for (auto args : std::vector<std::vector<std::string>>{{"verify"}, {"stats"}, {"streams"}}) {
    auto t = annals_tool(path, args);
    INFO(args[0] << ": " << t.out << t.err);
    CHECK(t.exit_code == 0);
  }
  auto d = run_on(BANK_EXE, path, {"open", "acc-9", "--owner", "Zed"});
  INFO("bank open: " << d.err);
  CHECK(d.exit_code == 4);
  CHECK(contains(d.err, "read-only"));
  CHECK(read_file(path) == before);
}
}  // namespace

TEST_CASE("a store on a read-only bind mount: reads work, writes fail with read_only") {
  temp_dir dir;
  const std::string data = dir.file("data"), ro = dir.file("ro");
  fs::create_directory(data);
  fs::create_directory(ro);
  make_store(data + "/store.db", 5);
  REQUIRE_FALSE(fs::exists(data + "/store.db-wal"));
  scoped_mount m;
  std::string why;
  if (!m.mount(data, ro, nullptr, MS_BIND, "", why) && skip_without_root(why)) return;
  if (!m.remount_read_only(why) && skip_without_root(why)) return;
  check_unwritable(ro + "/store.db");
}

TEST_CASE("an immutable store file (chattr +i, which root cannot write either)") {
  temp_dir dir;
  const std::string path = dir.file("store.db");
  make_store(path, 5);
  immutable_file lock(path);
  if (!lock.ok && skip_without_root("chattr +i " + path + " failed")) return;
  check_unwritable(path);
}

// ---- a lock held by another process ----------------------------------------------------------

TEST_CASE(
    "a write lock held by another process past the busy timeout: busy, then the append "
    "succeeds once it is released") {
  temp_dir dir;
  const std::string path = dir.file("store.db");
  make_store(path, 5);
  int ready[2], release[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(release) == 0);
  pid_t child = fork_child([&] {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) return 2;
    if (sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) return 3;
    write_all(ready[1], "x");
    char c;
    (void)!read(release[0], &c, 1);
    int rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close_v2(db);
    return rc == SQLITE_OK ? 0 : 4;
  });
  close(ready[1]);
  close(release[0]);
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);  // the child holds the lock

  sqlite_options o;
  o.busy_timeout_ms = 300;
  auto store = must(open_sqlite_store(path, o));
  auto t0 = std::chrono::steady_clock::now();
  auto r = store->append("s", expected_version::exact(4), make_events(1));
  auto waited = std::chrono::steady_clock::now() - t0;
  INFO(describe(r));
  CHECK(kind_of(r) == errc::busy);
  if (!r)
    CHECK(contains(r.error().message(), "locked by another connection past the busy timeout"));
  CHECK(waited >= std::chrono::milliseconds(300));
  CHECK(waited < std::chrono::seconds(5));
  CHECK(must(store->stream_version("s")) == 4);  // readers are not blocked (WAL)
  // The tools: readers work; a writer (bank, default 10 s timeout) exits 4 and says why.
  CHECK(annals_tool(path, {"stats"}).exit_code == 0);
  auto bank_open = run_on(BANK_EXE, path, {"open", "acc-1", "--owner", "Ann"});
  INFO("bank open: " << bank_open.err);
  CHECK(bank_open.exit_code == 4);
  CHECK(contains(bank_open.err, "busy timeout"));

  write_all(release[1], "x");
  close(release[1]);
  close(ready[0]);
  CHECK(wait_child(child) == 0);
  auto after = store->append("s", expected_version::exact(4), make_events(1));
  INFO(describe(after));
  CHECK(after.ok());
  CHECK(run_on(BANK_EXE, path, {"open", "acc-1", "--owner", "Ann"}).exit_code == 0);
  CHECK(annals_tool(path, {"verify"}).exit_code == 0);
}
