// annals::fault in one process: the spec grammar, @N and %P, disarming, the crash action (in a
// forked child), and a bad ANNALS_FAULTS stopping a real binary.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <annals/fault.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "support/support.hpp"

namespace {

namespace fault = annals::fault;

using annals::test::contains;

// Which of `hits` calls of point(name) fail, as a string of '.' (ok) and 'x' (failed).
std::string pattern(std::string_view name, int hits) {
  std::string out;
  for (int i = 0; i < hits; ++i) out += fault::point(name) ? '.' : 'x';
  return out;
}

struct disarm_after {
  ~disarm_after() { fault::disarm_all(); }
};

}  // namespace

TEST_CASE("nothing is armed by default: every point returns ok") {
  fault::disarm_all();
  for (auto name : fault::known_points()) CHECK(fault::point(name));
  CHECK(fault::point("myapp.anything"));
}

TEST_CASE("known_points lists the six built-in points, then those a program registered") {
  auto k = fault::known_points();
  std::vector<std::string_view> builtin{"store.append.before_commit", "store.append.after_commit",
                                        "projection.after_write",     "rebuild.before_swap",
                                        "relay.before_ack",           "relay.after_ack"};
  REQUIRE(k.size() >= builtin.size());
  CHECK(std::vector<std::string_view>(k.begin(), k.begin() + 6) == builtin);
  // Nothing of the bank sample's is built in: the sample registers its own point.
  CHECK(std::count(k.begin(), k.begin() + 6, std::string_view("saga.between_steps")) == 0);

  std::string name = "myapp.after_email";
  fault::register_point(name);
  fault::register_point(name);  // once only
  fault::register_point("relay.before_ack");  // a built-in one: not listed again
  name = "overwritten";  // the list keeps its own copy
  auto after = fault::known_points();
  CHECK(after.size() == k.size() + 1);
  CHECK(after.back() == "myapp.after_email");
  CHECK(std::count(after.begin(), after.end(), std::string_view("relay.before_ack")) == 1);
}

TEST_CASE("fail_io fails every hit, the N-th hit only with @N, and names the point") {
  disarm_after guard;
  REQUIRE(fault::arm("a.b=fail_io"));
  CHECK(pattern("a.b", 3) == "xxx");
  CHECK(pattern("a.c", 2) == "..");  // other names untouched
  auto r = fault::point("a.b");
  REQUIRE(!r);
  CHECK(r.error().kind() == annals::errc::io);
  CHECK(r.error().message() == "injected fault at a.b");
  fault::disarm_all();
  CHECK(pattern("a.b", 2) == "..");
  REQUIRE(fault::arm("x=fail_io@3, y=fail_io@1"));
  CHECK(pattern("x", 5) == "..x..");
  CHECK(pattern("y", 3) == "x..");
}

TEST_CASE("arm adds rules; disarm_all resets the hit counters") {
  disarm_after guard;
  REQUIRE(fault::arm("p=fail_io@2"));
  CHECK(pattern("p", 1) == ".");
  REQUIRE(fault::arm("p=fail_io@4"));  // the count goes on: hits 2..5
  CHECK(pattern("p", 4) == "x.x.");
  fault::disarm_all();
  REQUIRE(fault::arm("p=fail_io@2"));
  CHECK(pattern("p", 3) == ".x.");  // counted from 1 again
}

TEST_CASE("%P fires on about that share of the hits; with @N, on the N-th at most") {
  disarm_after guard;
  REQUIRE(fault::arm("r=fail_io%0.25"));
  auto p = pattern("r", 4000);
  auto fired = std::count(p.begin(), p.end(), 'x');
  CHECK(fired > 800);
  CHECK(fired < 1200);
  fault::disarm_all();
  REQUIRE(fault::arm("r=fail_io%1"));
  CHECK(pattern("r", 5) == "xxxxx");
  fault::disarm_all();
  REQUIRE(fault::arm("r=fail_io@2%1"));
  CHECK(pattern("r", 3) == ".x.");
}

TEST_CASE("bad specs are refused with a message naming the bad part, and arm nothing") {
  disarm_after guard;
  struct bad_case {
    const char* spec;
    const char* says;
  };
  for (const bad_case& c :
       {bad_case{"nope", "'nope': no '='"}, bad_case{"=crash", "point name"},
        bad_case{"a b=crash", "point name"}, bad_case{"x=explode", "unknown action 'explode'"},
        bad_case{"x=crash@0", "'@0' is not a hit number"},
        bad_case{"x=crash@-1", "'@-1' is not a hit number"},
        bad_case{"x=crash@", "'@' is not a hit number"},
        bad_case{"x=crash@2x", "'@2x' is not a hit number"},
        bad_case{"x=fail_io%0", "'%0' is not a probability"},
        bad_case{"x=fail_io%1.5", "'%1.5' is not a probability"},
        bad_case{"x=fail_io%abc", "'%abc' is not a probability"},
        bad_case{"x=crash%0.5@2", "'%0.5@2' is not a probability"},
        bad_case{"ok=fail_io,,y=crash", "empty item"},
        bad_case{"ok=fail_io,y=crash,z", "'z': no '='"}}) {
    const char* spec = c.spec;  // not a binding: clang 14 cannot capture one
    const char* says = c.says;
    CAPTURE(spec);
    auto r = fault::arm(spec);
    REQUIRE(!r);
    CHECK(r.error().kind() == annals::errc::invalid_argument);
    CHECK(contains(r.error().message(), says));
  }
  // The good item before a bad one was not armed either.
  CHECK(fault::point("ok"));
  CHECK(fault::arm(""));  // empty: nothing to arm
  CHECK(fault::point("ok"));
}

TEST_CASE("crash kills the process with SIGKILL at the armed hit, not before") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = annals::test::fork_child([&] {
    close(fds[0]);
    if (!fault::arm("boom=crash@3")) return 2;
    for (int i = 1; i <= 5; ++i) {
      if (!fault::point("boom")) return 3;
      annals::test::write_all(fds[1], fmt::format("survived {}\n", i));
    }
    return 0;  // not reached if the crash works
  });
  close(fds[1]);
  auto out = annals::test::read_to_eof(fds[0]);
  CHECK(annals::test::wait_child(pid) == 128 + SIGKILL);
  CHECK(out == "survived 1\nsurvived 2\n");
}

TEST_CASE("a bad ANNALS_FAULTS stops a program at start-up with exit code 78") {
  CHECK(fault::bad_spec_exit_code == 78);
  setenv("ANNALS_FAULTS", "store.append.before_commit=crash@zero", 1);
  auto r = annals::test::run({BANK_EXE, "--help"});
  unsetenv("ANNALS_FAULTS");
  CHECK(r.exit_code == 78);
  CHECK(contains(r.err, "'@zero' is not a hit number"));
  CHECK(r.out.empty());

  setenv("ANNALS_FAULT_SEED", "seven", 1);
  setenv("ANNALS_FAULTS", "x=crash%0.5", 1);
  r = annals::test::run({ANNALS_EXE, "--help"});
  unsetenv("ANNALS_FAULTS");
  unsetenv("ANNALS_FAULT_SEED");
  CHECK(r.exit_code == 78);
  CHECK(contains(r.err, "ANNALS_FAULT_SEED 'seven'"));

  // A good one that names no point the program reaches changes nothing.
  setenv("ANNALS_FAULTS", "myapp.somewhere=crash", 1);
  r = annals::test::run({BANK_EXE, "--help"});
  unsetenv("ANNALS_FAULTS");
  CHECK(r.exit_code == 0);
}
