// `bank serve`: the bank over HTTP (samples/bank/http.cpp) on an annals::http_server — the
// framework's read routes (/streams, /all, /subscribe, /projections, ...), the bank's account
// routes and commands, and the live dashboard page at "/" (samples/bank/dashboard.html).
//
//   GET  /accounts                    every account (read model)
//   GET  /accounts/{id}               {"id","owner","balance_cents","balance","closed","version"}
//   GET  /accounts/{id}/statement     money movements with running balances
//   POST /accounts                    {"id","owner"}: open
//   POST /accounts/{id}/deposits      {"amount": "12.50"} or {"amount_cents": 1250}
//   POST /accounts/{id}/withdrawals   the same
//   POST /transfers                   {"from","to","amount"[,"id"]}: 202, the saga carries it on
//
// Commands need --token (else 403) and "Authorization: Bearer <token>". `If-Match: "<version>"`
// makes a command conditional on the account's version (412 otherwise); an Idempotency-Key
// header makes a retry return the first response and write nothing (keys are kept in the
// table bank_idempotency_keys of the store's database, SQLite or PostgreSQL; a key left in
// progress by a dead server is taken over after --idempotency-timeout: see idempotency.hpp).
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace bank::cli {

// Adds `serve` to the bank CLI. `db` and `max_retries` are read when the command runs; `code`
// receives its exit code.
void add_http_commands(CLI::App& app, const std::string& db, const int& max_retries, int& code);

}  // namespace bank::cli
