// Tracing: spans as JSON lines for projections and subscriptions of events that carry a W3C
// traceparent, commands of a process manager descending from the step's span (caused_by), and
// nothing recorded when tracing is off or the event has no valid traceparent.
#include <doctest/doctest.h>

#include <annals/command.hpp>
#include <annals/subscription.hpp>
#include <annals/trace.hpp>

#include "account.hpp"
#include "projections.hpp"
#include "support/bank_events.hpp"
#include "support/support.hpp"

#include <mutex>
#include <string>
#include <vector>

namespace {

using annals::recorded_event;
using annals::result;
namespace be = annals::test::bank_events;

constexpr const char* parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// Captures span lines while alive; tracing is off again afterwards.
struct captured_spans {
  std::mutex mu;
  std::vector<std::string> lines;
  captured_spans() {
    annals::set_span_sink([this](std::string_view l) {
      std::lock_guard g(mu);
      lines.emplace_back(l);
    });
  }
  ~captured_spans() { annals::set_span_sink({}); }
  std::vector<std::string> named(const std::string& name) {
    std::lock_guard g(mu);
    std::vector<std::string> out;
    for (const auto& l : lines) {
      if (l.find("\"name\":\"" + name + "\"") != std::string::npos) out.push_back(l);
    }
    return out;
  }
};

using annals::test::contains;

// The value of "key":"value" in a span line.
std::string field(const std::string& line, const std::string& key) {
  auto at = line.find("\"" + key + "\":\"");
  if (at == std::string::npos) return {};
  at += key.size() + 4;
  return line.substr(at, line.find('"', at) - at);
}

std::unique_ptr<annals::event_store> seeded(const std::string& db, const char* traceparent) {
  auto store = bank::open_store(db).value_or_throw();
  auto opened = be::data_of(be::opened("t-1", "Ann"));
  auto dep = be::data_of(be::deposited("t-1", 500));
  for (auto* d : {&opened, &dep}) d->metadata.traceparent = traceparent;
  REQUIRE(store->append("account-t-1", annals::expected_version::no_stream(), {opened, dep}));
  return store;
}

}  // namespace

TEST_CASE("traceparents: validity and children") {
  CHECK(annals::valid_traceparent(parent));
  CHECK_FALSE(annals::valid_traceparent(""));
  CHECK_FALSE(annals::valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
  CHECK_FALSE(annals::valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
  CHECK_FALSE(annals::valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(annals::valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  const std::string child = annals::child_traceparent(parent);
  CHECK(annals::valid_traceparent(child));
  CHECK(child.substr(0, 36) == std::string(parent).substr(0, 36));  // same trace
  CHECK(child.substr(36, 16) != std::string(parent).substr(36, 16));
  const std::string fresh = annals::child_traceparent("garbage");
  CHECK(annals::valid_traceparent(fresh));
  CHECK(fresh.substr(3, 32) != std::string(parent).substr(3, 32));
}

TEST_CASE("a projection applying a traced event writes a span of the event's trace") {
  annals::test::temp_dir dir;
  const std::string db = dir.file("bank.db");
  auto store = seeded(db, parent);
  captured_spans spans;
  auto runner = bank::open_read_models(db).value_or_throw();
  REQUIRE(runner->catch_up());
  auto applied = spans.named("projection.apply");
  REQUIRE(applied.size() >= 2);  // the balances model alone applies both events
  for (const auto& line : applied) {
    CHECK(field(line, "trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(field(line, "parent_span_id") == "00f067aa0ba902b7");
    CHECK(field(line, "span_id").size() == 16);
    CHECK(field(line, "status") == "ok");
    CHECK(contains(line, "\"projection\":\""));
    CHECK(contains(line, "\"duration_us\":"));
  }
  bool balances = false;
  for (const auto& line : applied) balances |= field(line, "projection") == "account_balances";
  CHECK(balances);
}

TEST_CASE("a subscription's step is a span, and commands it causes descend from it") {
  annals::test::temp_dir dir;
  const std::string db = dir.file("bank.db");
  auto store = seeded(db, parent);
  captured_spans spans;
  std::vector<std::string> caused;
  auto sub = annals::subscription::open(
                 db, "mailer",
                 [&](const recorded_event& e) -> result<void> {
                   caused.push_back(annals::caused_by(e).traceparent);
                   return {};
                 })
                 .value_or_throw();
  REQUIRE(sub->catch_up());
  auto steps = spans.named("subscription.deliver");
  REQUIRE(steps.size() == 2);
  REQUIRE(caused.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(field(steps[i], "subscription") == "mailer");
    CHECK(field(steps[i], "parent_span_id") == "00f067aa0ba902b7");
    // The command's traceparent: same trace, the step's span as parent.
    CHECK(caused[i].substr(3, 32) == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(caused[i].substr(36, 16) == field(steps[i], "span_id"));
  }
}

TEST_CASE("a batch handler's events get spans; a failure marks the failing one") {
  annals::test::temp_dir dir;
  const std::string db = dir.file("bank.db");
  auto store = seeded(db, parent);
  captured_spans spans;
  int calls = 0;
  annals::subscription_options o;
  o.log = [](std::string_view) {};
  o.max_attempts = 1;
  auto sub = annals::subscription::open(
                 db, "relay-like",
                 [&](const std::vector<recorded_event>& batch,
                     std::size_t& handled) -> result<void> {
                   if (calls++ == 0) {
                     handled = 1;  // the second event fails once, then is parked
                     return annals::error(annals::errc::invalid_argument,
                                          "broker said \"no\"\n");
                   }
                   handled = batch.size();
                   return {};
                 },
                 o)
                 .value_or_throw();
  REQUIRE(sub->catch_up());
  auto steps = spans.named("subscription.deliver");
  REQUIRE(steps.size() == 2);  // one delivery of the batch; the failing event parked at once
  CHECK(contains(steps[0], "\"batch\":\"2\""));
  CHECK(field(steps[0], "status") == "ok");
  bool failed_escaped = false;
  for (const auto& s : steps) {
    failed_escaped |= contains(s, "\"status\":\"error\"") &&
                      contains(s, R"("error":"broker said \"no\"\n")");
  }
  CHECK(failed_escaped);
}

TEST_CASE("nothing is recorded when tracing is off or the event has no valid traceparent") {
  annals::test::temp_dir dir;
  const std::string db = dir.file("bank.db");
  {
    auto store = seeded(db, "not-a-traceparent");
    captured_spans spans;
    auto runner = bank::open_read_models(db).value_or_throw();
    REQUIRE(runner->catch_up());
    CHECK(spans.named("projection.apply").empty());
  }
  annals::test::temp_dir dir2;
  const std::string db2 = dir2.file("bank.db");
  auto store = seeded(db2, parent);
  CHECK_FALSE(annals::tracing_enabled());
  std::vector<std::string> caused;
  auto sub = annals::subscription::open(db2, "quiet",
                                        [&](const recorded_event& e) -> result<void> {
                                          caused.push_back(annals::caused_by(e).traceparent);
                                          return {};
                                        })
                 .value_or_throw();
  REQUIRE(sub->catch_up());
  REQUIRE(caused.size() == 2);
  CHECK(caused[0] == parent);  // no span: the trigger's own traceparent
}
