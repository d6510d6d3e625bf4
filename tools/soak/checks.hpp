// The invariants a soak run checks, while the load goes on and at the end.
#pragma once

#include <annals/event_store.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace soak {

// A command a child reported done: its last event is at `position`, stream version `version`.
struct ack {
  std::string stream;
  std::int64_t version = -1;
  std::int64_t position = 0;
};

struct check_result {
  std::string name;
  bool ok = false;
  std::string detail;  // why it failed, or a figure
};

// The money in the log, event by event (as tests/fault/crash_test.cpp's ledger): balances,
// what is in flight per transfer, what came from outside; `violations` counts the prefixes of
// the log where balances + in flight != deposits - withdrawals.
struct ledger {
  std::map<std::string, std::int64_t> balance;
  std::map<std::string, std::int64_t> in_flight;
  std::map<std::string, int> debits, credits;
  std::int64_t outside = 0;
  std::int64_t violations = 0;
  std::int64_t first_violation = 0;  // position
  std::int64_t events = 0;
  std::int64_t head = 0;  // last position read

  std::int64_t total_balances() const;
  std::int64_t total_in_flight() const;
};
annals::result<ledger> read_ledger(annals::event_store& store, std::int64_t upto = INT64_MAX);

// Every acknowledged command's event is in the log; every acknowledged transfer request too.
check_result check_acks(annals::event_store& store, const std::vector<ack>& acks,
                        const std::vector<std::string>& transfer_ids);
// Balances + in flight = deposits - withdrawals at every position. `finished`: also nothing in
// flight, and each transfer debited and credited at most once.
check_result check_money(const ledger& l, bool finished);
// account_balances equals the fold of the log up to its checkpoint (live, while appends go on).
check_result check_balance_model(const std::string& db, annals::event_store& store);
// `annals verify --db DB` exits 0.
check_result check_verify(const std::string& annals_exe, const std::string& db);
// `bank projections rebuild NAME --verify` finds 0 differences.
check_result check_rebuild(const std::string& bank_exe, const std::string& db,
                           const std::string& name);
// At the end: every transfer in the log completed or failed; each account's aggregate and its
// account_balances row equal the ledger's balance.
check_result check_transfers_finished(annals::event_store& store);
check_result check_aggregates(const std::string& db, annals::event_store& store, const ledger& l);
// JetStream: the stream holds one message per event (`finished`), or at least as many as the
// relay's checkpoint covers (while it runs).
check_result check_relay(const std::string& url, const std::string& stream,
                         const std::string& prefix, const std::string& db,
                         annals::event_store& store, bool finished);

std::int64_t relay_checkpoint(const std::string& db);

}  // namespace soak
