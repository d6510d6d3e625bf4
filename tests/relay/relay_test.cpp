// The NATS JetStream relay and consumer against a real nats-server (each case starts its own
// broker: ANNALS_NATS_SERVER, else nats-server on PATH or in /usr/sbin), and the bank's
// `relay` and `notify` commands end to end.
#include <annals/relay.hpp>
#include <annals/subscription.hpp>

#include "support/bank_events.hpp"
#include "support/support.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sqlite3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <thread>

namespace {

using namespace std::chrono_literals;
using annals::test::temp_dir;
namespace be = annals::test::bank_events;

std::string nats_server_binary() {
  if (const char* env = std::getenv("ANNALS_NATS_SERVER"); env && *env) return env;
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    for (std::size_t start = 0; start <= p.size();) {
      auto end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      std::string candidate = p.substr(start, end - start) + "/nats-server";
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  if (access("/usr/sbin/nats-server", X_OK) == 0) return "/usr/sbin/nats-server";
  return {};
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

using annals::test::spawn;

// A nats-server child with JetStream, its store in a temp dir; stop() and start() again keep
// the port and the store (a broker restart).
class broker {
 public:
  explicit broker(std::string config = {}) : port_(free_port()), config_(std::move(config)) {
    start();
  }
  ~broker() { stop(SIGTERM); }
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;

  std::string url() const { return fmt::format("nats://127.0.0.1:{}", port_); }

  // Starts with `config` (nats-server configuration file text; empty: none).
  void start(std::optional<std::string> config = std::nullopt) {
    if (config) config_ = *config;
    std::vector<std::string> args{nats_server_binary(), "-js", "-a", "127.0.0.1", "-p",
                                  std::to_string(port_), "-sd", dir_.file("js")};
    if (!config_.empty()) {
      std::ofstream(dir_.file("nats.conf")) << config_;
      args.push_back("-c");
      args.push_back(dir_.file("nats.conf"));
    }
    std::string log = dir_.file("log");
    pid_ = spawn(args, log);
    for (int i = 0; i < 500 && !port_open(port_); ++i) std::this_thread::sleep_for(10ms);
    REQUIRE_MESSAGE(port_open(port_), "nats-server did not start; see " << log);
  }

  void stop(int signal) {
    if (pid_ <= 0) return;
    kill(pid_, signal);
    annals::test::wait_child(pid_);
    pid_ = -1;
  }

 private:
  temp_dir dir_;
  int port_;
  std::string config_;
  pid_t pid_ = -1;
};

// Under the test command (ANNALS_TEST_NATS set) a missing broker fails the case; a bare
// ctest run without nats-server installed skips it, saying so.
#define REQUIRE_NATS_SERVER()                                                          \
  if (nats_server_binary().empty()) {                                                  \
    if (std::getenv("ANNALS_TEST_NATS")) FAIL("nats-server not found");                \
    MESSAGE("skipped: nats-server not found (set ANNALS_NATS_SERVER or install it)"); \
    return;                                                                            \
  }

// Appends `count` deposits to `streams` accounts, in appends of up to 500 events.
std::vector<std::string> append_deposits(annals::event_store& store, int count, int streams,
                                         const std::string& prefix = "account-") {
  std::vector<std::string> ids;
  int done = 0;
  while (done < count) {
    int n = std::min(500, count - done);
    std::vector<annals::event_data> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(be::data_of(be::deposited("a", 100 + done + i), annals::new_uuid_v7()));
      ids.push_back(batch.back().event_id);
    }
    auto stream = fmt::format("{}{}", prefix, done / 500 % streams);
    REQUIRE(store.append(stream, annals::expected_version::any(), std::move(batch)));
    done += n;
  }
  return ids;
}

std::uint64_t stream_messages(const std::string& url, const std::string& stream = "ANNALS") {
  auto info = annals::read_jetstream_stream(url, stream);
  if (!info) return 0;
  return info->messages;
}

// Every message of the stream through a new durable consumer. An empty poll ends it only once
// as many messages as the stream holds have come (all subjects), or after 30 s: a new consumer
// on a loaded machine may deliver nothing within one poll's wait.
std::vector<annals::relayed_message> consume_all(const std::string& url,
                                                 const std::string& durable,
                                                 const std::string& filter = "annals.>") {
  const std::uint64_t expected = filter == "annals.>" ? stream_messages(url) : 0;
  auto c = annals::jetstream_consumer::open(url, "ANNALS", durable, filter);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message()));
  std::vector<annals::relayed_message> out;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    auto n = (*c)->poll(
        [&](const annals::relayed_message& m) {
          out.push_back(m);
          return annals::result<void>();
        },
        1000, 300ms);
    REQUIRE_MESSAGE(n, (n ? "" : n.error().message()));
    if (*n == 0 && (out.size() >= expected || std::chrono::steady_clock::now() > deadline)) break;
  }
  return out;
}

// Each store event id exactly once among the messages.
void check_exactly_once(const std::vector<annals::relayed_message>& got,
                        const std::vector<std::string>& ids) {
  std::map<std::string, int> seen;
  for (const auto& m : got) ++seen[m.event_id];
  CHECK(got.size() == ids.size());
  int missing = 0, repeated = 0;
  for (const auto& id : ids) {
    auto it = seen.find(id);
    if (it == seen.end()) {
      ++missing;
    } else if (it->second != 1) {
      ++repeated;
    }
  }
  CHECK(missing == 0);
  CHECK(repeated == 0);
}

template <class Pred>
bool eventually(Pred&& p, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return p();
}

annals::relay_options fast_options(const std::string& url) {
  annals::relay_options o;
  o.nats_url = url;
  o.ack_timeout = 1000ms;
  o.lease = 1000ms;
  o.log = [](std::string_view) {};
  return o;
}

}  // namespace

TEST_CASE("subject tokens escape every byte outside [A-Za-z0-9_-] and name empty tokens _") {
  CHECK(annals::subject_token("") == "_");
  CHECK(annals::subject_token("account") == "account");
  CHECK(annals::subject_token("a.b*c>d e~") == "a~2Eb~2Ac~3Ed~20e~7E");
  CHECK(annals::relay_subject("annals", "account-42", "bank.v1.MoneyDeposited") ==
        "annals.account.bank_v1_MoneyDeposited");
  CHECK(annals::relay_subject("annals", "nodash", "t") == "annals.nodash.t");
  CHECK(annals::relay_subject("annals", "-lead", "t") == "annals._.t");
  CHECK(annals::relay_category_filter("annals", "account") == "annals.account.>");
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  CHECK(annals::header_value_decode(annals::header_value_encode(all)) == all);
  CHECK(annals::header_value_encode("a b\r\n%") == "a%20b%0D%0A%25");
}

TEST_CASE("hostile stream names are escaped in subjects, and headers carry the event's metadata") {
  REQUIRE_NATS_SERVER();
  broker b;
  temp_dir dir;
  auto store = annals::open_store(dir.file("s.db")).value_or_throw();
  const std::vector<std::string> streams{"evil.*>x y-1", "\xC3\xBCn\xC3\xAF-2", "-lead",
                                         "nodash", "account-7"};
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < streams.size(); ++i) {
    auto d = be::data_of(be::deposited("x", 5), annals::new_uuid_v7());
    if (i % 2 == 0) {
      d.metadata.correlation_id = fmt::format("corr {}\r\nInjected: yes", i);
      d.metadata.causation_id = fmt::format("cause-{}", i);
      d.metadata.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    }
    ids.push_back(d.event_id);
    REQUIRE(store->append(streams[i], annals::expected_version::any(), {d}));
  }
  auto r = annals::relay::open(dir.file("s.db"), "hostile", fast_options(b.url()));
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message()));
  auto n = (*r)->catch_up();
  REQUIRE(n);
  CHECK(n->events == static_cast<std::int64_t>(streams.size()));

  auto got = consume_all(b.url(), "hostile-check");
  check_exactly_once(got, ids);
  std::map<std::string, annals::relayed_message> by_id;
  for (auto& m : got) by_id[m.event_id] = m;
  const std::regex token("[A-Za-z0-9_~-]+");
  REQUIRE(store
              ->read_all({},
                         [&](const annals::recorded_event& e) {
                           const auto& m = by_id.at(e.event_id);
                           CHECK(m.subject == annals::relay_subject("annals", e.stream_id, e.type));
                           // Three tokens, each only of safe bytes: nothing injected.
                           auto a = m.subject.find('.'), z = m.subject.rfind('.');
                           CHECK(m.subject.substr(0, a) == "annals");
                           CHECK(std::regex_match(m.subject.substr(a + 1, z - a - 1), token));
                           CHECK(std::regex_match(m.subject.substr(z + 1), token));
                           CHECK(m.type == e.type);
                           CHECK(m.position == e.position);
                           CHECK(m.stream_id == e.stream_id);
                           CHECK(m.stream_version == e.stream_version);
                           CHECK(m.correlation_id == e.metadata.correlation_id);
                           CHECK(m.causation_id == e.metadata.causation_id);
                           CHECK(m.traceparent == e.metadata.traceparent);
                           CHECK(m.recorded_at_us == e.recorded_at_us);
                           CHECK(m.payload == e.payload);
                           CHECK(m.deliveries == 1);
                           return true;
                         })
              .ok());
  CHECK(by_id.at(ids[0]).subject == "annals.evil~2E~2A~3Ex~20y.bank_v1_MoneyDeposited");
  CHECK(by_id.at(ids[2]).subject == "annals._.bank_v1_MoneyDeposited");
}

TEST_CASE("every event is published exactly once after the relay process is killed mid-way") {
  REQUIRE_NATS_SERVER();
  broker b;
  temp_dir dir;
  const int total = 30000;
  std::vector<std::string> ids;
  {
    auto store = annals::open_store(dir.file("s.db")).value_or_throw();
    ids = append_deposits(*store, total, 7);
  }
  auto relay_args = [&](bool once) {
    std::vector<std::string> a{BANK_EXE, "--db", dir.file("s.db"), "relay", "--nats", b.url(),
                               "--name", "crash", "--batch-size", "100", "--lease-ms", "1000"};
    if (once) a.push_back("--once");
    return a;
  };
  pid_t child = spawn(relay_args(false));
  REQUIRE(eventually([&] { return stream_messages(b.url()) >= total / 5; }, 20s));
  kill(child, SIGKILL);
  CHECK(annals::test::wait_child(child) == 128 + SIGKILL);
  auto at_kill = stream_messages(b.url());
  MESSAGE("published when killed: " << at_kill << " of " << total);
  CHECK(at_kill < static_cast<std::uint64_t>(total));  // the kill came mid-way

  // Restart: it waits out the dead process's lease, resumes from the checkpoint, and the
  // broker drops what was published after that checkpoint but before the kill.
  auto again = annals::test::run(relay_args(true));
  INFO(again.err);
  REQUIRE(again.exit_code == 0);
  MESSAGE("restarted relay: " << again.out);
  CHECK(stream_messages(b.url()) == static_cast<std::uint64_t>(total));
  check_exactly_once(consume_all(b.url(), "crash-check"), ids);
}

TEST_CASE("a broker restart while the relay runs loses nothing and duplicates nothing") {
  REQUIRE_NATS_SERVER();
  broker b;
  temp_dir dir;
  auto store = annals::open_store(dir.file("s.db")).value_or_throw();
  auto ids = append_deposits(*store, 2000, 3);
  auto r = annals::relay::open(dir.file("s.db"), "restart", fast_options(b.url()));
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message()));
  REQUIRE((*r)->start());

  std::atomic<bool> appending{true};
  std::vector<std::string> more;
  std::thread appender([&] {
    auto s = annals::open_store(dir.file("s.db")).value_or_throw();
    for (int i = 0; i < 150; ++i) {
      auto d = be::data_of(be::deposited("r", i + 1), annals::new_uuid_v7());
      more.push_back(d.event_id);
      REQUIRE(s->append(fmt::format("account-r{}", i % 4), annals::expected_version::any(),
                        {d}));
      std::this_thread::sleep_for(10ms);
    }
    appending = false;
  });
  std::this_thread::sleep_for(400ms);
  b.stop(SIGKILL);  // while appends go on
  std::this_thread::sleep_for(600ms);
  b.start();
  appender.join();
  ids.insert(ids.end(), more.begin(), more.end());
  auto head = store->head_position().value();
  auto w = (*r)->wait_for(head, 20s);
  REQUIRE_MESSAGE(w, (w ? "" : w.error().message()));
  (*r)->stop();
  CHECK(stream_messages(b.url()) == ids.size());
  check_exactly_once(consume_all(b.url(), "restart-check"), ids);
}

TEST_CASE("rebuilding a bank projection while the relay runs republishes nothing") {
  REQUIRE_NATS_SERVER();
  broker b;
  temp_dir dir;
  std::string db = dir.file("bank.db");
  for (auto cmd : std::vector<std::vector<std::string>>{
           {"open", "acc-1", "--owner", "Ann Smith"},
           {"open", "acc-2", "--owner", "Bob"},
           {"deposit", "acc-1", "12.50"},
           {"deposit", "acc-2", "3"},
           {"withdraw", "acc-1", "2.25"}}) {
    cmd.insert(cmd.begin(), {BANK_EXE, "--db", db});
    REQUIRE(annals::test::run(cmd).exit_code == 0);
  }
  auto r = annals::relay::open(db, "rebuild", fast_options(b.url()));
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message()));
  REQUIRE((*r)->start());
  auto store = annals::open_store(db).value_or_throw();
  auto head = store->head_position().value();
  REQUIRE((*r)->wait_for(head, 10s));
  auto before = stream_messages(b.url());
  CHECK(before == static_cast<std::uint64_t>(head));

  auto rebuild = annals::test::run({BANK_EXE, "--db", db, "projections", "rebuild",
                                    "account_statement"});
  INFO(rebuild.err);
  REQUIRE(rebuild.exit_code == 0);
  std::this_thread::sleep_for(300ms);  // many poll intervals of the running relay
  CHECK(store->head_position().value() == head);
  CHECK(stream_messages(b.url()) == before);
  (*r)->stop();
  auto st = (*r)->status();
  REQUIRE(st);
  CHECK(st->checkpoint == head);
}

TEST_CASE("bank notify records one notification per event, whatever is redelivered") {
  REQUIRE_NATS_SERVER();
  broker b;
  temp_dir dir;
  std::string db = dir.file("bank.db");
  auto bank = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {BANK_EXE, "--db", db});
    return annals::test::run(args);
  };
  REQUIRE(bank({"open", "n-1", "--owner", "Ann"}).exit_code == 0);
  for (int i = 1; i <= 6; ++i) REQUIRE(bank({"deposit", "n-1", std::to_string(i)}).exit_code == 0);
  REQUIRE(bank({"open", "n-2", "--owner", "Bob"}).exit_code == 0);
  auto store = annals::open_store(db).value_or_throw();
  const auto events = store->head_position().value();

  auto relayed = bank({"relay", "--nats", b.url(), "--once"});
  INFO(relayed.err);
  REQUIRE(relayed.exit_code == 0);
  CHECK(relayed.out.find(fmt::format("published {} event(s)", events)) != std::string::npos);

  std::string out = dir.file("notify.db");
  auto count_rows = [&] {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(out.c_str(), &h) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(h, "SELECT count(*), count(DISTINCT event_id) FROM "
                                  "sent_notifications",
                               -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    std::pair<std::int64_t, std::int64_t> rows{sqlite3_column_int64(st, 0),
                                               sqlite3_column_int64(st, 1)};
    sqlite3_finalize(st);
    sqlite3_close(h);
    return rows;
  };
  auto first = bank({"notify", "--nats", b.url(), "--out", out, "--once"});
  INFO(first.err);
  REQUIRE(first.exit_code == 0);
  CHECK(first.out.find(fmt::format("notified {} event(s), ignored 0 duplicate(s)", events)) !=
        std::string::npos);
  CHECK(count_rows() == std::pair<std::int64_t, std::int64_t>{events, events});

  // A second consumer (a redeployed service with a new durable) gets every message again:
  // every one is a duplicate, and the database still has one row per event.
  auto second = bank({"notify", "--nats", b.url(), "--out", out, "--once", "--durable", "v2"});
  INFO(second.err);
  REQUIRE(second.exit_code == 0);
  CHECK(second.out.find(fmt::format("notified 0 event(s), ignored {} duplicate(s)", events)) !=
        std::string::npos);
  CHECK(count_rows() == std::pair<std::int64_t, std::int64_t>{events, events});

  // The first durable consumer resumes where it acked: nothing new.
  auto third = bank({"notify", "--nats", b.url(), "--out", out, "--once"});
  CHECK(third.out.find("notified 0 event(s), ignored 0 duplicate(s)") != std::string::npos);
}

TEST_CASE("bank relay and notify report an unreachable broker with exit code 4") {
  temp_dir dir;
  std::string db = dir.file("bank.db");
  REQUIRE(annals::test::run({BANK_EXE, "--db", db, "open", "u-1", "--owner", "U"}).exit_code == 0);
  std::string nowhere = fmt::format("nats://127.0.0.1:{}", free_port());
  auto r = annals::test::run({BANK_EXE, "--db", db, "relay", "--nats", nowhere, "--once"});
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("cannot connect to " + nowhere) != std::string::npos);
  auto n = annals::test::run(
      {BANK_EXE, "notify", "--nats", nowhere, "--out", dir.file("n.db"), "--once"});
  CHECK(n.exit_code == 4);
  CHECK(n.err.find("cannot connect to " + nowhere) != std::string::npos);
  auto usage = annals::test::run({BANK_EXE, "--db", db, "relay", "--once"});
  CHECK(usage.exit_code == 2);
}

TEST_CASE("an event larger than the broker's max_payload is parked, then delivered on retry") {
  REQUIRE_NATS_SERVER();
  broker b("max_payload: 4096\n");
  temp_dir dir;
  auto store = annals::open_store(dir.file("s.db")).value_or_throw();
  auto ids = append_deposits(*store, 20, 1);
  auto big = be::data_of(be::opened("big", std::string(8000, 'x')), annals::new_uuid_v7());
  REQUIRE(store->append("account-big", annals::expected_version::any(), {big}));
  auto big_position = store->head_position().value();
  auto after = append_deposits(*store, 20, 1, "account-after");
  ids.insert(ids.end(), after.begin(), after.end());

  auto o = fast_options(b.url());
  o.max_attempts = 2;
  auto r = annals::relay::open(dir.file("s.db"), "big", o);
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message()));
  auto n = (*r)->catch_up();
  REQUIRE(n);
  CHECK(n->events == 40);  // the parked one is not counted
  auto admin = annals::subscription_admin::open(dir.file("s.db")).value_or_throw();
  auto parked = admin->parked("relay:big").value_or_throw();
  REQUIRE(parked.size() == 1);
  CHECK(parked[0].position == big_position);
  CHECK(parked[0].error.find("max_payload") != std::string::npos);
  CHECK(stream_messages(b.url()) == 40);

  // The operator raises the limit (a broker restart with the default 1 MB) and retries.
  b.stop(SIGTERM);
  b.start(std::string());
  CHECK(admin->retry("relay:big", big_position).value_or_throw() == 1);
  REQUIRE(eventually(
      [&] {
        auto k = (*r)->catch_up();
        return k && stream_messages(b.url()) == 41;
      },
      10s));
  ids.push_back(big.event_id);
  check_exactly_once(consume_all(b.url(), "big-check"), ids);
}

#ifdef ANNALS_BENCH_EXE
TEST_CASE("an existing stream that does not take the relay's subjects is refused at open") {
  REQUIRE_NATS_SERVER();
  broker b;
  temp_dir dir;
  auto store = annals::open_store(dir.file("s.db")).value_or_throw();
  REQUIRE(store->append("account-1", annals::expected_version::any(),
                        {be::data_of(be::deposited("account-1", 5), annals::new_uuid_v7())}));
  // A first relay creates stream ANNALS for "orders.>".
  auto o = fast_options(b.url());
  o.subject_prefix = "orders";
  auto first = annals::relay::open(dir.file("s.db"), "orders", o);
  REQUIRE_MESSAGE(first, (first ? "" : first.error().message()));
  // Another prefix on the same stream would publish into the void ("no responders"), retried
  // forever as an outage: refused instead, naming the stream's subjects.
  auto second = annals::relay::open(dir.file("s.db"), "annals", fast_options(b.url()));
  REQUIRE_FALSE(second);
  CHECK(second.error().kind() == annals::errc::invalid_argument);
  CHECK(second.error().message().find("orders.>") != std::string::npos);
  // A prefix under a covered one is fine.
  o.subject_prefix = "orders.eu";
  auto third = annals::relay::open(dir.file("s.db"), "orders-eu", o);
  CHECK_MESSAGE(third, (third ? "" : third.error().message()));
}

TEST_CASE("annals-bench --scenario relay prints its figure in the documented format") {
  REQUIRE_NATS_SERVER();
  broker b;
  auto r = annals::test::run({ANNALS_BENCH_EXE, "--quick", "--reps", "1", "--scenario", "relay",
                              "--nats", b.url()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  for (const char* field : {"\"scenario\":\"relay\"", "\"events_per_s\":", "\"baseline_per_s\":",
                            "\"ratio\":", "\"latency_p50_ms\":", "\"latency_p99_ms\":"}) {
    CHECK_MESSAGE(r.out.find(field) != std::string::npos, field << " missing from " << r.out);
  }
  // Its streams are gone: the run leaves the broker as it found it.
  CHECK(!annals::read_jetstream_stream(b.url(), "ANNALS_BENCH_R1"));
  CHECK(!annals::read_jetstream_stream(b.url(), "ANNALS_BENCH_LAT"));
}
#endif
