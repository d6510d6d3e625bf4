// `bank serve`'s Idempotency-Key records, in the table bank_idempotency_keys of the store's
// database (SQLite file or PostgreSQL database, through annals::sql_database).
//
// A row per key: the request it was first used with (method, path, If-Match and body), the
// response once there is one, and while the request runs a claim: a token, its time, and the
// id the request's first event gets. A claim older than the takeover timeout belongs to a
// server that died (or a request that ran far longer than any should): the next request with
// the same key takes it over — one taker, by a compare-and-set on the token — keeping the event
// id, so the taker can tell from the store whether the dead request's command happened.
//
// Thread safety: an idempotency_keys may be used from several threads and processes at once.
#pragma once

#include <annals/http.hpp>
#include <annals/result.hpp>
#include <annals/sql_database.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace bank {

class idempotency_keys {
 public:
  // Opens the store's database (a handle or a URI) and creates the table (or adds the claim columns to a table
  // of an earlier `bank serve`). `takeover_after`: how old a claim must be to be taken over.
  static annals::result<std::unique_ptr<idempotency_keys>> open(
      annals::store_ref store, std::chrono::milliseconds takeover_after);

  enum class claim_kind {
    claimed,            // a new key: run the request
    taken_over,         // a stale claim, now ours: find out whether its command happened, run
    replay,             // answered before: `response` is that answer
    different_request,  // the key was used for another request
    in_progress,        // another request with this key is running
    failed,             // the database failed: `error`
  };
  struct claim {
    claim_kind kind = claim_kind::failed;
    std::string token;     // claimed, taken_over: this claim, for finish()
    std::string event_id;  // claimed, taken_over: the id the request's first event gets
    annals::http_response response;  // replay
    std::string error;               // failed
  };

  // Claims `key` for `request`, or says why not. Atomic across threads and processes.
  claim take(const std::string& key, const std::string& request);

  // Records the response of the claim `token` on `key`. A response not worth keeping (409 or
  // 5xx: the client should retry) releases the claim instead: the next request with the key
  // (the same request: the key stays bound to it) takes it over at once. Returns false when
  // the claim is no longer held (another request took it over) or the database failed:
  // nothing was recorded.
  bool finish(const std::string& key, const std::string& token, const annals::http_response& r);

  explicit idempotency_keys(std::unique_ptr<annals::sql_database> db,
                            std::chrono::milliseconds takeover_after)
      : db_(std::move(db)), takeover_after_(takeover_after) {}

 private:
  std::unique_ptr<annals::sql_database> db_;
  std::chrono::milliseconds takeover_after_;
};

}  // namespace bank
