// bank relay / bank notify: the bank's events to NATS JetStream, and a service consuming them.
// See integration.hpp and docs/relay.md.
#include "integration.hpp"

#include "cli.hpp"

#include <annals/relay.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sqlite3.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

namespace bank::cli {

namespace {

std::atomic<bool> stop_requested{false};

extern "C" void on_stop_signal(int) { stop_requested.store(true); }

void install_stop_signals() {
  struct sigaction sa{};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// The relay reads an existing store: do not create one for a mistyped path.
annals::result<void> require_store_file(const std::string& db) {
  if (db.find("://") != std::string::npos) return {};
  std::string path = db.rfind("sqlite:", 0) == 0 ? db.substr(7) : db;
  if (access(path.c_str(), F_OK) != 0) {
    return annals::error(annals::errc::invalid_argument,
                         fmt::format("there is no store at '{}' (the first 'open' creates it)",
                                     path));
  }
  return {};
}

struct relay_args {
  std::string nats_url;
  std::string name = "bank";
  std::string stream = "ANNALS";
  std::string prefix = "annals";
  std::int64_t batch_size = 500;
  std::int64_t lease_ms = 10000;
  bool once = false;
};

int run_relay(const std::string& db, const relay_args& a) {
  if (auto r = require_store_file(db); !r) return report(r.error());
  annals::relay_options o;
  o.nats_url = a.nats_url;
  o.stream = a.stream;
  o.subject_prefix = a.prefix;
  o.batch_size = a.batch_size;
  o.lease = std::chrono::milliseconds(a.lease_ms);
  o.log = [](std::string_view line) { fmt::print(stderr, "bank relay: {}\n", line); };
  auto r = annals::relay::open(db, a.name, o);
  if (!r) return report(r.error());
  auto& relay = **r;
  if (a.once) {
    // Up to the head seen now. Another relay of the same name may hold the lease (a live
    // one, or one that died: its lease runs out): wait for it, a few lease periods at most.
    auto first = relay.status();
    if (!first) return report(first.error());
    if (first->active) {
      fmt::print(stderr, "bank relay: waiting for the lease of '{}' (held by another relay)\n",
                 relay.subscription_name());
    }
    if (auto w = relay.wait_for(first->head, 3 * o.lease); !w) {
      if (w.error().kind() != annals::errc::timed_out) return report(w.error());
      return report(annals::error(
          annals::errc::timed_out,
          fmt::format("{} (another relay named '{}' may hold the lease of '{}'); published {} "
                      "event(s)",
                      w.error().message(), a.name, relay.subscription_name(),
                      relay.acknowledged())));
    }
    const std::int64_t published = relay.acknowledged();
    fmt::print("published {} event(s) to JetStream stream '{}' ({} already there)\n", published,
               a.stream, relay.duplicates());
    if (auto st = relay.status(); st && st->parked > 0) {
      fmt::print(stderr,
                 "bank relay: warning: {} event(s) parked (refused by the broker); see "
                 "'annals subscriptions parked {}'\n",
                 st->parked, relay.subscription_name());
    }
    return 0;
  }
  install_stop_signals();
  if (auto s = relay.start(); !s) return report(s.error());
  fmt::print(stderr, "bank relay: publishing to '{}' on {} (Ctrl-C stops)\n", a.stream,
             a.nats_url);
  while (!stop_requested.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  relay.stop();
  fmt::print("published {} event(s) to JetStream stream '{}' ({} already there)\n",
             relay.acknowledged(), a.stream, relay.duplicates());
  return 0;
}

// ---- the notification service --------------------------------------------------------------

struct notify_args {
  std::string nats_url;
  std::string out;
  std::string durable = "bank-notify";
  std::string stream = "ANNALS";
  std::string prefix = "annals";
  bool once = false;
};

annals::error db_error(sqlite3* db, std::string_view what) {
  return annals::error(annals::errc::io,
                       fmt::format("notifications database: {}: {}", what,
                                   db ? sqlite3_errmsg(db) : "out of memory"));
}

// The service's own database: one row per notified event (its id is the key: a redelivered
// message finds its row and is ignored), and the count of duplicates ignored so far.
class notification_db {
 public:
  ~notification_db() {
    sqlite3_finalize(insert_);
    sqlite3_finalize(count_dup_);
    sqlite3_close(db_);
  }

  annals::result<void> open(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        nullptr) != SQLITE_OK) {
      return db_error(db_, fmt::format("opening '{}'", path));
    }
    sqlite3_busy_timeout(db_, 10000);
    const char* ddl =
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
        "CREATE TABLE IF NOT EXISTS sent_notifications ("
        "  event_id TEXT PRIMARY KEY, position INTEGER NOT NULL, type TEXT NOT NULL,"
        "  stream_id TEXT NOT NULL, sent_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS notify_counters ("
        "  name TEXT PRIMARY KEY, value INTEGER NOT NULL);";
    if (sqlite3_exec(db_, ddl, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return db_error(db_, fmt::format("creating the tables in '{}'", path));
    }
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO sent_notifications (event_id, position, type, stream_id,"
                           " sent_at) VALUES (?1, ?2, ?3, ?4, ?5)"
                           " ON CONFLICT (event_id) DO NOTHING",
                           -1, &insert_, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(db_,
                           "INSERT INTO notify_counters (name, value) VALUES (?1, ?2)"
                           " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                           -1, &count_dup_, nullptr) != SQLITE_OK) {
      return db_error(db_, "preparing statements");
    }
    return {};
  }

  // One transaction for the batch; `sent` / `duplicates` count what it did once committed.
  annals::result<void> record(const std::vector<annals::relayed_message>& batch,
                              std::int64_t& sent, std::int64_t& duplicates) {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return db_error(db_, "BEGIN");
    }
    std::int64_t s = 0, d = 0;
    auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    for (const auto& m : batch) {
      if (m.event_id.empty()) {
        // Not a relayed event: nothing to key it by. Skip it, visibly.
        fmt::print(stderr, "bank notify: ignoring a message on '{}' without Nats-Msg-Id\n",
                   m.subject);
        continue;
      }
      sqlite3_reset(insert_);
      sqlite3_bind_text(insert_, 1, m.event_id.data(), static_cast<int>(m.event_id.size()),
                        SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert_, 2, m.position);
      sqlite3_bind_text(insert_, 3, m.type.data(), static_cast<int>(m.type.size()),
                        SQLITE_TRANSIENT);
      sqlite3_bind_text(insert_, 4, m.stream_id.data(), static_cast<int>(m.stream_id.size()),
                        SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert_, 5, now_us);
      if (sqlite3_step(insert_) != SQLITE_DONE) {
        auto e = db_error(db_, "recording a notification");
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        return e;
      }
      if (sqlite3_changes(db_) == 1) {
        ++s;
      } else {
        ++d;
      }
    }
    if (d > 0) {
      sqlite3_reset(count_dup_);
      sqlite3_bind_text(count_dup_, 1, "duplicates_ignored", -1, SQLITE_STATIC);
      sqlite3_bind_int64(count_dup_, 2, d);
      if (sqlite3_step(count_dup_) != SQLITE_DONE) {
        auto e = db_error(db_, "counting duplicates");
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        return e;
      }
    }
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      auto e = db_error(db_, "COMMIT");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return e;
    }
    sent += s;
    duplicates += d;
    return {};
  }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* count_dup_ = nullptr;
};

int run_notify(const notify_args& a) {
  notification_db db;
  if (auto r = db.open(a.out); !r) return report(r.error());
  auto consumer = annals::jetstream_consumer::open(
      a.nats_url, a.stream, a.durable, annals::relay_category_filter(a.prefix, "account"));
  if (!consumer) return report(consumer.error());
  if (!a.once) install_stop_signals();
  std::int64_t sent = 0, duplicates = 0;
  auto handle = [&](const std::vector<annals::relayed_message>& batch) {
    return db.record(batch, sent, duplicates);
  };
  while (!stop_requested.load()) {
    auto n = (*consumer)->poll_batch(handle, 500, std::chrono::milliseconds(500));
    if (!n && n.error().kind() == annals::errc::io && !a.once) {
      // The broker is away (or the database busy): a running service waits for it.
      fmt::print(stderr, "bank notify: {} (retrying)\n", n.error().message());
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (!n) return report(n.error());
    if (*n == 0 && a.once) break;
  }
  fmt::print("notified {} event(s), ignored {} duplicate(s)\n", sent, duplicates);
  return 0;
}

}  // namespace

void add_integration_commands(CLI::App& app, const std::string& db, int& code) {
  auto r = std::make_shared<relay_args>();
  auto* relay_cmd = app.add_subcommand(
      "relay", "Publish the store's events to NATS JetStream, exactly once per event (live "
               "until SIGINT/SIGTERM, or --once)");
  relay_cmd->add_option("--nats", r->nats_url, "NATS server URL, e.g. nats://127.0.0.1:4222")
      ->required();
  relay_cmd->add_flag("--once", r->once, "Publish what is in the store, then exit");
  relay_cmd->add_option("--name", r->name, "Relay name (its checkpoint is 'relay:NAME')")
      ->capture_default_str();
  relay_cmd->add_option("--stream", r->stream, "JetStream stream (created when missing)")
      ->capture_default_str();
  relay_cmd->add_option("--prefix", r->prefix, "Subject prefix")->capture_default_str();
  relay_cmd->add_option("--batch-size", r->batch_size, "Events published per batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  relay_cmd->add_option("--lease-ms", r->lease_ms,
                        "How long a dead relay's lease blocks another of the same name")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600000));
  relay_cmd->callback([&code, &db, r] { code = run_relay(db, *r); });

  auto n = std::make_shared<notify_args>();
  auto* notify_cmd = app.add_subcommand(
      "notify", "The notification service: consume the account events from JetStream and "
                "record one notification per event in FILE (idempotent)");
  notify_cmd->add_option("--nats", n->nats_url, "NATS server URL")->required();
  notify_cmd->add_option("--out", n->out, "The service's SQLite database")->required();
  notify_cmd->add_flag("--once", n->once, "Consume what is there, then exit");
  notify_cmd->add_option("--durable", n->durable, "Durable consumer name")
      ->capture_default_str();
  notify_cmd->add_option("--stream", n->stream, "JetStream stream")->capture_default_str();
  notify_cmd->add_option("--prefix", n->prefix, "Subject prefix")->capture_default_str();
  notify_cmd->callback([&code, n] { code = run_notify(*n); });
}

}  // namespace bank::cli
