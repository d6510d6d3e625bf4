// The per-store commit signal (framework/src/store/prepared.hpp): a commit wakes this process's
// runners, subscriptions and SSE streams on the store it went to, and nobody on other stores.
// An internal contract, so this file (alone in the suite) includes the framework's private
// header; what users see of it is latency, which the benches measure.
#include "store/backends.hpp"
#include "store/prepared.hpp"
#include "support/forwarding_store.hpp"

#include <annals/append_watch.hpp>

#include <filesystem>
#include <memory>
#include <string>

using namespace annals;
using namespace annals::test;

TEST_CASE_TEMPLATE("a commit raises the signal of its own store only", B, ANNALS_STORE_BACKENDS) {
  B one, other;
  auto first = one.open();
  auto second = one.open();  // another handle on the same store
  auto elsewhere = other.open();

  auto signal = store::commits_of(*first);
  REQUIRE(signal);
  CHECK(signal == store::commits_of(*second));
  CHECK(signal != store::commits_of(*elsewhere));

  auto seen = signal->sequence();
  must(elsewhere->append("s-1", expected_version::any(), make_events(2)));
  CHECK(signal->sequence() == seen);  // a commit to another store does not wake this one

  must(second->append("s-1", expected_version::any(), make_events(1)));
  CHECK(signal->sequence() > seen);  // nor does it matter which handle committed
  seen = signal->sequence();

  // A commit that appends nothing (an empty append, a refused one) signals nothing.
  must(first->append("s-1", expected_version::any(), {}));
  CHECK(kind_of(first->append("s-1", expected_version::no_stream(), make_events(1))) ==
        errc::concurrency_conflict);
  CHECK(signal->sequence() == seen);
}

TEST_CASE("a SQLite store reached through a symbolic link has the signal of the file") {
  sqlite_backend b;
  auto direct = b.open();
  auto link = b.dir.file("link.db");
  std::filesystem::create_symlink(b.path, link);
  auto through_link = must(open_sqlite_store(link));
  CHECK(store::commits_of(*direct) == store::commits_of(*through_link));
}

TEST_CASE("a store that is not one of Annals' gets a signal of its own") {
  struct empty_store final : event_store {
    result<append_result> append(std::string_view, expected_version,
                                 std::vector<event_data>) override {
      return error(errc::io, "unused");
    }
    result<std::int64_t> read_stream(std::string_view, const read_stream_options&,
                                     const event_visitor&) override {
      return std::int64_t{0};
    }
    result<std::int64_t> read_all(const read_all_options&,
                                  const event_visitor&) override {
      return std::int64_t{0};
    }
    result<std::int64_t> stream_version(std::string_view) override { return std::int64_t{-1}; }
    result<std::int64_t> head_position() override { return std::int64_t{0}; }
  };
  empty_store a, b;
  auto sa = store::commits_of(a);
  REQUIRE(sa);
  CHECK(sa != store::commits_of(b));
}

TEST_CASE_TEMPLATE("an append_watch wakes on appends through any handle on its store", B,
                   ANNALS_STORE_BACKENDS) {
  B one;
  std::shared_ptr<event_store> handle = one.open();
  auto other = one.open();
  auto watch = must(append_watch::open(store_ref(one.uri())));  // opened from the URI
  auto on_handle = must(append_watch::open(store_ref(handle)));
  const auto mark = watch->mark();
  const auto handle_mark = on_handle->mark();
  must(other->append("w-1", expected_version::any(), make_events(1)));
  watch->wait(mark, std::chrono::seconds(30));  // returns at once: the mark is behind
  CHECK(watch->mark() > mark);
  CHECK(on_handle->mark() > handle_mark);
}

TEST_CASE("an append_watch refuses a double, and watches the database a double was adopted "
          "with") {
  sqlite_backend b;
  std::shared_ptr<event_store> real = b.open();
  auto double_store = std::make_shared<forwarding_store>(*real);
  auto r = append_watch::open(store_ref(double_store));
  CHECK(kind_of(r) == errc::invalid_argument);

  auto watch = must(append_watch::open(store_ref::adopt(double_store, b.uri())));
  const auto mark = watch->mark();
  must(double_store->append("through-double", expected_version::any(), make_events(1)));
  CHECK(watch->mark() > mark);  // the double wraps a store on that database
}
