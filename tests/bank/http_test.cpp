// `bank serve` end to end: the real executable on 127.0.0.1 (port 0, the URL read from its
// first line of output), spoken to over plain sockets.
//
// Compiled twice: bank_http_tests (a SQLite file) and bank_http_pg_tests (`--db
// postgresql://...`, a fresh database per server on ANNALS_TEST_PG; a case fails when there is
// no server).
#include <doctest/doctest.h>

#include "support/postgres.hpp"
#include "support/support.hpp"

#include <annals/event_store.hpp>
#include <annals/sql_database.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>
#include <string>
#include <vector>

using annals::test::temp_dir;

namespace {

#ifdef ANNALS_BANK_ON_POSTGRES
constexpr bool on_postgres = true;
#else
constexpr bool on_postgres = false;
#endif

// A store for one or more servers in turn: a SQLite file, or a fresh PostgreSQL database.
struct store_place {
  temp_dir dir;
  annals::test::pg::store_location loc{dir.file("bank.db"), on_postgres};
  const std::string& uri() const { return loc.path; }
};

using annals::test::contains;

struct response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// One request on a new connection (Connection: close), read to the end.
response request(int port, const std::string& method, const std::string& path,
                 const std::string& body = {},
                 const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") {
    req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n";
  }
  req += "\r\n" + body;
  REQUIRE(annals::test::write_all(fd, req));
  std::string raw = annals::test::read_to_eof(fd);  // closes fd
  response r;
  auto head_end = raw.find("\r\n\r\n");
  REQUIRE(head_end != std::string::npos);
  std::string head = raw.substr(0, head_end);
  r.body = raw.substr(head_end + 4);
  REQUIRE(head.size() > 12);
  r.status = std::stoi(head.substr(9, 3));
  std::size_t at = head.find("\r\n");
  while (at != std::string::npos) {
    std::size_t next = head.find("\r\n", at + 2);
    std::string line = head.substr(at + 2, next == std::string::npos ? std::string::npos
                                                                     : next - at - 2);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers[name] = value;
    }
    at = next;
  }
  if (r.header("transfer-encoding") == "chunked") {  // de-chunk
    std::string out;
    std::size_t i = 0;
    for (;;) {
      auto eol = r.body.find("\r\n", i);
      if (eol == std::string::npos) break;
      std::size_t n = std::stoul(r.body.substr(i, eol - i), nullptr, 16);
      if (n == 0) break;
      out += r.body.substr(eol + 2, n);
      i = eol + 2 + n + 2;
    }
    r.body = out;
  }
  return r;
}

// `bank serve --port 0` in a child process; stopped (SIGTERM) on destruction. On its own store,
// or on `place`'s (which must outlive it).
class bank_server {
 public:
  explicit bank_server(std::vector<std::string> extra = {}, const store_place* place = nullptr)
      : place_(place ? place : (own_ = std::make_unique<store_place>()).get()) {
    int out[2];
    REQUIRE(pipe(out) == 0);
    std::vector<std::string> args = {BANK_EXE, "--db", db(), "serve", "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;  // built before fork(): the child allocates nothing before exec
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[512] = {};
    REQUIRE(fgets(line, sizeof line, f) != nullptr);
    fclose(f);
    std::string s = line;
    INFO("first line: " << s);
    REQUIRE(contains(s, "listening on http://127.0.0.1:"));
    port_ = std::stoi(s.substr(s.rfind(':') + 1));
  }
  ~bank_server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  // Kills the server as a crash would: no cleanup of any kind.
  void kill9() {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  int port() const { return port_; }
  std::string db() const { return place_->uri(); }

  // The store's head position, read directly from the store.
  std::int64_t head() const {
    annals::sqlite_options o;
    o.read_only = true;
    o.create_if_missing = false;
    auto s = annals::open_store(db(), o);
    REQUIRE(s);
    auto h = (*s)->head_position();
    REQUIRE(h);
    return *h;
  }

  response post(const std::string& path, const std::string& body,
                std::vector<std::pair<std::string, std::string>> headers = {}) const {
    headers.emplace_back("Authorization", "Bearer t0ken");
    return request(port_, "POST", path, body, headers);
  }
  response get(const std::string& path) const { return request(port_, "GET", path); }

 private:
  std::unique_ptr<store_place> own_;
  const store_place* place_;
  pid_t pid_ = -1;
  int port_ = 0;
};

const std::vector<std::string> with_token = {"--token", "t0ken"};

}  // namespace

TEST_CASE("json commands open, deposit and withdraw, and the account reads back") {
  bank_server s(with_token);
  auto r = s.post("/accounts", R"({"id": "acc-1", "owner": "Ann Smith"})");
  CHECK(r.status == 201);
  CHECK(contains(r.body, R"("version":0)"));
  r = s.post("/accounts/acc-1/deposits", R"({"amount": "12.50"})");
  CHECK(r.status == 200);
  CHECK(contains(r.body, R"("balance_cents":1250)"));
  CHECK(contains(r.body, R"("balance":"12.50")"));
  CHECK(contains(r.body, R"("version":1)"));
  CHECK(contains(r.body, R"("position":2)"));
  CHECK(r.header("etag") == "\"1\"");
  r = s.post("/accounts/acc-1/withdrawals", R"({"amount_cents": 250})");
  CHECK(r.status == 200);
  CHECK(contains(r.body, R"("balance_cents":1000)"));

  r = s.get("/accounts/acc-1");
  CHECK(r.status == 200);
  CHECK(r.body ==
        R"({"id":"acc-1","owner":"Ann Smith","balance_cents":1000,"balance":"10.00",)"
        R"("closed":false,"version":2})");
  CHECK(r.header("etag") == "\"2\"");
  r = s.get("/accounts/acc-1/statement");
  CHECK(r.status == 200);
  CHECK(contains(r.body, R"("kind":"deposit")"));
  CHECK(contains(r.body, R"("kind":"withdrawal")"));
  r = s.get("/accounts");
  CHECK(r.status == 200);
  CHECK(contains(r.body, R"("id":"acc-1")"));
  r = s.get("/");
  CHECK(r.status == 200);
  CHECK(contains(r.body, "EventSource"));
  CHECK(s.get("/accounts/" + std::string(300, 'x')).status == 400);
}

TEST_CASE("a command's events carry the request's trace id") {
  bank_server s(with_token);
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  REQUIRE(s.post("/accounts", R"({"id": "t", "owner": "Ty"})",
                 {{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}})
              .status == 201);
  annals::sqlite_options o;
  o.read_only = true;
  auto store = annals::open_store(s.db(), o);
  REQUIRE(store);
  std::string traceparent;
  REQUIRE((*store)->read_stream("account-t", {}, [&](const annals::recorded_event& e) {
    traceparent = e.metadata.traceparent;
    return true;
  }));
  CHECK(contains(traceparent, trace));  // the server's span under the caller's trace
}

TEST_CASE("a command whose If-Match is not the account's version is 412 and writes nothing") {
  bank_server s(with_token);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
  REQUIRE(s.post("/accounts/a/deposits", R"({"amount": "5"})").status == 200);  // version 1
  auto head = s.head();
  auto r = s.post("/accounts/a/deposits", R"({"amount": "1"})", {{"If-Match", "\"0\""}});
  CHECK(r.status == 412);
  CHECK(contains(r.body, "\"error\""));
  CHECK(s.head() == head);
  r = s.post("/accounts/a/deposits", R"({"amount": "1"})", {{"If-Match", "\"1\""}});
  CHECK(r.status == 200);
  CHECK(r.header("etag") == "\"2\"");
  CHECK(s.post("/accounts/a/deposits", R"({"amount": "1"})", {{"If-Match", "two"}}).status ==
        400);
}

TEST_CASE("a retry with the same Idempotency-Key returns the first response and writes nothing") {
  bank_server s(with_token);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
  auto first = s.post("/accounts/a/deposits", R"({"amount": "7"})", {{"Idempotency-Key", "k-1"}});
  REQUIRE(first.status == 200);
  auto head = s.head();
  auto again = s.post("/accounts/a/deposits", R"({"amount": "7"})", {{"Idempotency-Key", "k-1"}});
  CHECK(again.status == 200);
  CHECK(again.body == first.body);
  CHECK(again.header("etag") == first.header("etag"));
  CHECK(again.header("idempotent-replayed") == "true");
  CHECK(s.head() == head);
  // The same key for another request is refused.
  auto other = s.post("/accounts/a/deposits", R"({"amount": "8"})", {{"Idempotency-Key", "k-1"}});
  CHECK(other.status == 422);
  CHECK(s.head() == head);
  CHECK(contains(s.get("/accounts/a").body, R"("balance_cents":700)"));
  // A refused command's answer is kept too.
  auto refused =
      s.post("/accounts/a/withdrawals", R"({"amount": "100"})", {{"Idempotency-Key", "k-2"}});
  CHECK(refused.status == 422);
  CHECK(s.post("/accounts/a/withdrawals", R"({"amount": "100"})", {{"Idempotency-Key", "k-2"}})
            .body == refused.body);
}

TEST_CASE("concurrent requests with one Idempotency-Key deposit once") {
  bank_server s(with_token);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
  auto head = s.head();
  std::vector<response> answers(8);
  std::vector<std::thread> threads;
  for (auto& a : answers) {
    threads.emplace_back([&] {
      a = s.post("/accounts/a/deposits", R"({"amount": "3"})", {{"Idempotency-Key", "same"}});
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (const auto& a : answers) {
    INFO(a.status << " " << a.body);
    CHECK((a.status == 200 || a.status == 409));  // 409: the first one was still running
    ok += a.status == 200;
  }
  CHECK(ok >= 1);
  CHECK(s.head() == head + 1);
  CHECK(contains(s.get("/accounts/a").body, R"("balance_cents":300)"));
}

TEST_CASE("bad requests are 4xx with an error and write nothing") {
  bank_server s(with_token);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
  auto head = s.head();
  struct bad {
    std::string path, body;
    int status;
  };
  const std::vector<bad> cases = {
      {"/accounts/a/deposits", "{\"amount\": \"1\"", 400},           // truncated
      {"/accounts/a/deposits", "[1]", 400},                          // not an object
      {"/accounts/a/deposits", R"({"amount": "1"} x)", 400},         // trailing bytes
      {"/accounts/a/deposits", R"({"amount": "1", "amount": "2"})", 400},  // duplicate key
      {"/accounts/a/deposits", R"({"amount": {"v": 1}})", 400},      // nested
      {"/accounts/a/deposits", R"({"amount": "1", "memo": "x"})", 400},  // unknown field
      {"/accounts/a/deposits", R"({})", 400},                        // no amount
      {"/accounts/a/deposits", R"({"amount": "-1"})", 400},
      {"/accounts/a/deposits", R"({"amount": "1.234"})", 400},
      {"/accounts/a/deposits", R"({"amount": "abc"})", 400},
      {"/accounts/a/deposits", R"({"amount": "0"})", 400},
      {"/accounts/a/deposits", R"({"amount_cents": -5})", 400},
      {"/accounts/a/deposits", R"({"amount_cents": 1.5})", 400},
      {"/accounts/a/deposits", R"({"amount_cents": 99999999999999999999})", 400},
      {"/accounts/a/deposits", "{\"amount\": \"\xff\"}", 400},       // not UTF-8
      {"/accounts/nobody/deposits", R"({"amount": "1"})", 404},      // unknown account
      {"/accounts/a/withdrawals", R"({"amount": "1"})", 422},        // insufficient funds
      {"/accounts", R"({"id": "a", "owner": "Bo"})", 422},           // already open
      {"/accounts", R"({"id": "b"})", 400},                          // no owner
  };
  for (const auto& c : cases) {
    INFO(c.path << " " << c.body);
    auto r = s.post(c.path, c.body);
    CHECK(r.status == c.status);
    CHECK(contains(r.body, "\"error\""));
  }
  auto huge = s.post("/accounts/a/deposits",
                     R"({"amount": "1", "pad": ")" + std::string(200 * 1024, 'x') + "\"}");
  CHECK(huge.status == 413);
  CHECK(s.get("/accounts/nobody").status == 404);
  CHECK(s.head() == head);
}

TEST_CASE("commands need the server's token") {
  {
    bank_server s;  // no --token: commands are off
    auto r = request(s.port(), "POST", "/accounts", R"({"id": "a", "owner": "Bo"})");
    CHECK(r.status == 403);
    CHECK(s.head() == 0);
    CHECK(s.get("/accounts").status == 200);  // reads stay open
  }
  bank_server s(with_token);
  CHECK(request(s.port(), "POST", "/accounts", R"({"id": "a", "owner": "Bo"})").status == 401);
  CHECK(request(s.port(), "POST", "/accounts", R"({"id": "a", "owner": "Bo"})",
                {{"Authorization", "Bearer wrong"}})
            .status == 401);
  CHECK(s.head() == 0);
  CHECK(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
}

TEST_CASE("a transfer request is accepted and the saga in the server carries it out") {
  bank_server s(with_token);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Ann"})").status == 201);
  REQUIRE(s.post("/accounts", R"({"id": "b", "owner": "Bo"})").status == 201);
  REQUIRE(s.post("/accounts/a/deposits", R"({"amount": "10"})").status == 200);
  auto r = s.post("/transfers", R"({"id": "t1", "from": "a", "to": "b", "amount": "4"})");
  CHECK(r.status == 202);
  std::string state;
  for (int i = 0; i < 250 && state != "completed"; ++i) {
    auto t = s.get("/transfers/t1");
    state = contains(t.body, R"("state":"completed")") ? "completed" : "";
    if (state.empty()) usleep(20000);
  }
  CHECK(state == "completed");
  for (int i = 0; i < 250 && !contains(s.get("/accounts/b").body, R"("balance_cents":400)"); ++i) {
    usleep(20000);
  }
  CHECK(contains(s.get("/accounts/b").body, R"("balance_cents":400)"));
  CHECK(contains(s.get("/accounts/a").body, R"("balance_cents":600)"));
}

namespace {

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Runs one statement on the store's database, beside the server (through the framework's
// sql_database, so the same text on both backends). Returns the rows changed.
std::int64_t sql(const std::string& db, const std::string& statement,
                 annals::sql_params params = {}) {
  auto d = annals::sql_database::open(db);
  REQUIRE_MESSAGE(d.ok(), (d.ok() ? "" : d.error().message()));
  std::int64_t changed = 0;
  auto ok = (*d)->write([&](annals::sql_tx& tx) -> annals::result<void> {
    auto n = tx.exec(statement, params);
    if (!n) return n.error();
    changed = *n;
    return {};
  });
  REQUIRE_MESSAGE(ok.ok(), (ok.ok() ? "" : ok.error().message()));
  return changed;
}

// Makes the key's record look like a request still running since `age_us` ago, as a server
// that died mid-request leaves it. A new event id: as if the dead request never appended.
void make_in_progress(const std::string& db, const std::string& key, std::int64_t age_us,
                      bool appended) {
  const std::string fresh = annals::new_uuid_v7();
  CHECK(sql(db,
            "UPDATE bank_idempotency_keys SET status = NULL, response = NULL, etag = NULL, "
            "created_at_us = ?2, claim = ?3, event_id = CASE WHEN ?4 = 1 THEN event_id ELSE ?5 "
            "END WHERE key = ?1",
            {key, now_us() - age_us, "dead-server", appended ? 1 : 0, fresh}) == 1);
}

// Sends one request and reads whatever comes back; never fails (the server may be killed).
void fire(int port, const std::string& path, const std::string& body, const std::string& key) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return;
  }
  std::string req = "POST " + path +
                    " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    "Authorization: Bearer t0ken\r\nIdempotency-Key: " +
                    key + "\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)annals::test::write_all(fd, req);
  (void)annals::test::read_to_eof(fd);  // closes fd
}

// The value of `"field":N` in a JSON body, or -1.
std::int64_t json_int(const std::string& body, const std::string& field) {
  auto at = body.find("\"" + field + "\":");
  if (at == std::string::npos) return -1;
  return std::stoll(body.substr(at + field.size() + 3));
}

}  // namespace

TEST_CASE("a key left in progress by a dead server is taken over once its claim is stale") {
  bank_server s(with_token);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
  const std::string body = R"({"amount": "3"})";
  auto first = s.post("/accounts/a/deposits", body, {{"Idempotency-Key", "k"}});
  REQUIRE(first.status == 200);

  // A claim younger than the timeout (30 s by default) is a request still running: 409.
  make_in_progress(s.db(), "k", 1'000'000, false);
  auto head = s.head();
  auto busy = s.post("/accounts/a/deposits", body, {{"Idempotency-Key", "k"}});
  CHECK(busy.status == 409);
  CHECK(s.head() == head);

  // Stale, and the dead request never appended: concurrent retries deposit exactly once.
  make_in_progress(s.db(), "k", 60'000'000, false);
  std::vector<response> answers(8);
  std::vector<std::thread> threads;
  for (auto& a : answers) {
    threads.emplace_back(
        [&] { a = s.post("/accounts/a/deposits", body, {{"Idempotency-Key", "k"}}); });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (const auto& a : answers) {
    INFO(a.status << " " << a.body);
    CHECK((a.status == 200 || a.status == 409));  // 409: the taker was still running
    ok += a.status == 200;
  }
  CHECK(ok >= 1);
  CHECK(s.head() == head + 1);
  CHECK(contains(s.get("/accounts/a").body, R"("balance_cents":600)"));
  auto replay = s.post("/accounts/a/deposits", body, {{"Idempotency-Key", "k"}});
  CHECK(replay.status == 200);
  CHECK(replay.header("idempotent-replayed") == "true");
  CHECK(json_int(replay.body, "version") == 2);
  CHECK(s.head() == head + 1);

  // Stale, and the dead request did append before dying: the retry answers from its event
  // and appends nothing.
  make_in_progress(s.db(), "k", 60'000'000, true);
  auto recovered = s.post("/accounts/a/deposits", body, {{"Idempotency-Key", "k"}});
  CHECK(recovered.status == 200);
  CHECK(json_int(recovered.body, "version") == 2);
  CHECK(json_int(recovered.body, "position") == head + 1);
  CHECK(recovered.header("etag") == "\"2\"");
  CHECK(s.head() == head + 1);
  CHECK(contains(s.get("/accounts/a").body, R"("balance_cents":600)"));
  // A different request under the key is still refused, stale claim or not.
  make_in_progress(s.db(), "k", 60'000'000, false);
  CHECK(s.post("/accounts/a/deposits", R"({"amount": "4"})", {{"Idempotency-Key", "k"}}).status ==
        422);
  CHECK(s.head() == head + 1);
}

TEST_CASE("a transfer whose dead request appended it is answered from its event, same id") {
  std::vector<std::string> args = with_token;
  args.push_back("--no-saga");  // nothing else appends
  bank_server s(args);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Ann"})").status == 201);
  REQUIRE(s.post("/accounts", R"({"id": "b", "owner": "Bo"})").status == 201);
  const std::string body = R"({"from": "a", "to": "b", "amount": "4"})";  // the server picks the id
  auto first = s.post("/transfers", body, {{"Idempotency-Key", "t"}});
  REQUIRE(first.status == 202);
  const auto head = s.head();
  make_in_progress(s.db(), "t", 60'000'000, true);
  auto again = s.post("/transfers", body, {{"Idempotency-Key", "t"}});
  CHECK(again.status == 202);
  CHECK(again.header("idempotent-replayed").empty());  // rebuilt from the event, not replayed
  CHECK(again.body == first.body);                      // the same transfer id and position
  CHECK(again.header("location") == first.header("location"));
  CHECK(s.head() == head);
}

TEST_CASE("--idempotency-timeout sets when a claim is stale, and rejects bad values") {
  std::vector<std::string> args = with_token;
  args.insert(args.end(), {"--idempotency-timeout", "1"});
  bank_server s(args);
  REQUIRE(s.post("/accounts", R"({"id": "a", "owner": "Bo"})").status == 201);
  REQUIRE(s.post("/accounts/a/deposits", R"({"amount": "3"})", {{"Idempotency-Key", "k"}})
              .status == 200);
  make_in_progress(s.db(), "k", 0, false);
  const auto head = s.head();
  CHECK(s.post("/accounts/a/deposits", R"({"amount": "3"})", {{"Idempotency-Key", "k"}})
            .status == 409);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto r = s.post("/accounts/a/deposits", R"({"amount": "3"})", {{"Idempotency-Key", "k"}});
  CHECK(r.status == 200);
  CHECK(r.header("idempotent-replayed").empty());
  CHECK(s.head() == head + 1);

  for (const char* bad : {"0", "-5", "abc", "86401"}) {
    CAPTURE(bad);
    auto run = annals::test::run(
        {BANK_EXE, "--db", s.db(), "serve", "--port", "0", "--idempotency-timeout", bad});
    CHECK(run.exit_code == 2);
    CHECK(contains(run.err, "idempotency-timeout"));
  }
}

TEST_CASE("requests cut off by a kill -9 of the server take effect exactly once when retried") {
  store_place place;
  const int n = 12;
  std::int64_t head = 0;
  {
    std::vector<std::string> args = with_token;
    args.insert(args.end(), {"--idempotency-timeout", "1"});
    bank_server a(args, &place);
    for (int i = 0; i < n; ++i) {
      auto id = "a" + std::to_string(i);
      REQUIRE(a.post("/accounts", R"({"id": ")" + id + R"(", "owner": "Bo"})").status == 201);
    }
    head = a.head();
    // Every request in flight at once, the server killed while they run (some not yet
    // claimed, some claimed, some appended, some answered).
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        fire(a.port(), "/accounts/a" + std::to_string(i) + "/deposits", R"({"amount": "1"})",
             "kill-" + std::to_string(i));
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
    a.kill9();
    for (auto& t : threads) t.join();
  }
  std::vector<std::string> args = with_token;
  args.insert(args.end(), {"--idempotency-timeout", "1"});
  bank_server b(args, &place);
  for (int i = 0; i < n; ++i) {
    auto id = "a" + std::to_string(i);
    response r;
    for (int attempt = 0; attempt < 100; ++attempt) {  // 409 until the dead claim is stale
      r = b.post("/accounts/" + id + "/deposits", R"({"amount": "1"})",
                 {{"Idempotency-Key", "kill-" + std::to_string(i)}});
      if (r.status != 409) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    INFO(id << ": " << r.status << " " << r.body);
    CHECK(r.status == 200);
    CHECK(json_int(r.body, "version") == 1);
    CHECK(contains(b.get("/accounts/" + id).body, R"("balance_cents":100)"));
  }
  CHECK(b.head() == head + n);
}
