#include "idempotency.hpp"

#include <annals/event_store.hpp>
#include <fmt/format.h>

#include <optional>

namespace bank {
namespace {

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Request and response bytes are bound as BLOB / BYTEA: a request may hold any bytes (a body
// that is not UTF-8 is refused only after it is claimed), and PostgreSQL text may not.
annals::sql_value bytes(const std::string& s) { return annals::sql_value::blob_ref{s}; }

annals::result<void> create_table(annals::sql_tx& tx) {
  const bool pg = tx.dialect() == "postgresql";
  std::string ddl = fmt::format(
      "CREATE TABLE IF NOT EXISTS bank_idempotency_keys ("
      "key TEXT PRIMARY KEY, "
      "request {0} NOT NULL, "          // method, path, If-Match and body
      "status {1}, "                    // NULL while the request runs
      "response {0}, etag TEXT, "
      "created_at_us {1} NOT NULL, "    // when the current claim was taken (UTC microseconds)
      "event_id TEXT NOT NULL DEFAULT '', "  // the id the request's first event gets
      "claim TEXT NOT NULL DEFAULT '')",     // the current claim's token
      pg ? "BYTEA" : "BLOB", pg ? "BIGINT" : "INTEGER");
  if (auto r = tx.exec(ddl); !r) return r.error();
  if (pg) return {};
  // A table of an earlier `bank serve` (SQLite only) has no claim columns.
  bool has_claim = false;
  auto q = tx.query("SELECT 1 FROM pragma_table_info('bank_idempotency_keys') WHERE name = ?1",
                    {"claim"}, [&](const annals::sql_row&) {
                      has_claim = true;
                      return false;
                    });
  if (!q) return q.error();
  if (has_claim) return {};
  for (const char* column : {"event_id", "claim"}) {
    auto sql = fmt::format("ALTER TABLE bank_idempotency_keys ADD COLUMN {} TEXT NOT NULL "
                           "DEFAULT ''",
                           column);
    if (auto r = tx.exec(sql); !r) return r.error();
  }
  return {};
}

}  // namespace

annals::result<std::unique_ptr<idempotency_keys>> idempotency_keys::open(
    annals::store_ref store, std::chrono::milliseconds takeover_after) {
  auto db = annals::sql_database::open(std::move(store));
  if (!db) return std::move(db).error();
  // Two servers starting at once on PostgreSQL may race on CREATE TABLE IF NOT EXISTS (a
  // unique violation in the catalog): the second attempt sees the table.
  annals::result<void> made;
  for (int attempt = 0; attempt < 3; ++attempt) {
    made = (*db)->write(create_table);
    if (made) break;
  }
  if (!made) {
    return annals::error(made.error().kind(),
                         "cannot create bank_idempotency_keys: " + made.error().message());
  }
  return std::make_unique<idempotency_keys>(std::move(db).value(), takeover_after);
}

idempotency_keys::claim idempotency_keys::take(const std::string& key,
                                               const std::string& request) {
  claim out;
  const std::string token = annals::new_uuid_v7();
  const std::string fresh_event_id = annals::new_uuid_v7();
  auto r = db_->write([&](annals::sql_tx& tx) -> annals::result<void> {
    out = claim{};
    const std::int64_t now = now_us();
    // ON CONFLICT DO NOTHING: of concurrent inserts of one key exactly one inserts (on
    // PostgreSQL the others wait for it, then change nothing).
    auto inserted = tx.exec(
        "INSERT INTO bank_idempotency_keys (key, request, created_at_us, event_id, claim) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO NOTHING",
        {key, bytes(request), now, fresh_event_id, token});
    if (!inserted) return inserted.error();
    if (*inserted == 1) {
      out.kind = claim_kind::claimed;
      out.token = token;
      out.event_id = fresh_event_id;
      return {};
    }
    struct row {
      std::string request, response, etag, event_id, claim;
      std::optional<std::int64_t> status;
      std::int64_t created_at_us = 0;
    };
    std::optional<row> found;
    auto q = tx.query(
        "SELECT request, status, response, etag, created_at_us, event_id, claim "
        "FROM bank_idempotency_keys WHERE key = ?1",
        {key}, [&](const annals::sql_row& s) {
          row w;
          w.request = s.bytes(0).bytes;
          if (!s.is_null(1)) {
            w.status = s.int64(1);
            w.response = s.bytes(2).bytes;
          }
          if (!s.is_null(3)) w.etag = s.text(3);
          w.created_at_us = s.int64(4);
          w.event_id = s.text(5);
          w.claim = s.text(6);
          found = std::move(w);
          return false;
        });
    if (!q) return q.error();
    if (!found) {  // deleted (by hand) between the insert and the select: retry at once
      out.kind = claim_kind::in_progress;
      return {};
    }
    if (found->request != request) {
      out.kind = claim_kind::different_request;
      return {};
    }
    if (found->status) {
      out.kind = claim_kind::replay;
      out.response.status = static_cast<int>(*found->status);
      out.response.body = std::move(found->response);
      if (!found->etag.empty()) out.response.headers.push_back({"ETag", found->etag});
      out.response.headers.push_back({"Idempotent-Replayed", "true"});
      return {};
    }
    const auto cutoff =
        now - std::chrono::duration_cast<std::chrono::microseconds>(takeover_after_).count();
    if (found->created_at_us > cutoff) {
      out.kind = claim_kind::in_progress;
      return {};
    }
    // A stale claim: take it over if nobody else did since we read it (compare-and-set on
    // its token; on PostgreSQL a concurrent taker waits for our row lock, then matches
    // nothing). The event id stays: the dead request's command is recognisable by it.
    const std::string event_id = found->event_id.empty() ? fresh_event_id : found->event_id;
    auto taken = tx.exec(
        "UPDATE bank_idempotency_keys SET claim = ?2, created_at_us = ?3, event_id = ?4 "
        "WHERE key = ?1 AND claim = ?5 AND status IS NULL",
        {key, token, now, event_id, found->claim});
    if (!taken) return taken.error();
    if (*taken == 1) {
      out.kind = claim_kind::taken_over;
      out.token = token;
      out.event_id = event_id;
    } else {
      out.kind = claim_kind::in_progress;
    }
    return {};
  });
  if (!r) {
    out = claim{};
    out.kind = claim_kind::failed;
    out.error = r.error().message();
  }
  return out;
}

bool idempotency_keys::finish(const std::string& key, const std::string& token,
                              const annals::http_response& resp) {
  std::int64_t changed = 0;
  auto r = db_->write([&](annals::sql_tx& tx) -> annals::result<void> {
    annals::result<std::int64_t> n = std::int64_t{0};
    if (resp.status >= 500 || resp.status == 409) {
      // Released, not deleted: the event id stays, in case a command did happen (the next
      // request with the key takes the claim over at once and looks for it).
      n = tx.exec("UPDATE bank_idempotency_keys SET created_at_us = 0 "
                  "WHERE key = ?1 AND claim = ?2 AND status IS NULL",
                  {key, token});
    } else {
      annals::sql_value etag;  // NULL
      for (const auto& h : resp.headers) {
        if (h.key == "ETag") etag = h.value;
      }
      n = tx.exec("UPDATE bank_idempotency_keys SET status = ?3, response = ?4, etag = ?5 "
                  "WHERE key = ?1 AND claim = ?2 AND status IS NULL",
                  {key, token, resp.status, bytes(resp.body), etag});
    }
    if (!n) return n.error();
    changed = *n;
    return {};
  });
  return r && changed == 1;
}

}  // namespace bank
