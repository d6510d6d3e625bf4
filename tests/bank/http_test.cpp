// `bank serve` end to end: the real executable on 127.0.0.1 (port 0, the URL read from its
// first line of output), spoken to over plain sockets.
#include <doctest/doctest.h>

#include "support/support.hpp"

#include <annals/event_store.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <thread>
#include <string>
#include <vector>

using annals::test::temp_dir;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

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

// `bank serve --port 0` in a child process; stopped (SIGTERM) on destruction.
class bank_server {
 public:
  explicit bank_server(std::vector<std::string> extra = {}) {
    int out[2];
    REQUIRE(pipe(out) == 0);
    std::vector<std::string> args = {BANK_EXE, "--db", db(), "serve", "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
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
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  int port() const { return port_; }
  std::string db() const { return dir_.file("bank.db"); }

  // The store's head position, read directly from the file.
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
  temp_dir dir_;
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
