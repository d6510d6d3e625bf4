// Money transfers between accounts: the transfer aggregate and its process manager (a saga).
//
// A transfer is a stream "transfer-<id>" holding its own progress (bank/v1/transfers.proto):
//
//   TransferRequested ─► TransferDebited ─► TransferCompleted
//          │                    │
//          ▼                    ▼
//   TransferFailed      TransferCreditRefused ─► TransferRefunded + TransferFailed (refunded)
//
// `bank transfer` appends TransferRequested. The process manager is an annals::subscription
// named "bank-transfers" on the transfer streams; for each event that leaves work to do it runs
// one step: a command on an account (withdraw from the source, deposit to the target, refund
// the source), then records the outcome in the transfer stream, which delivers the next step.
//
// Every step is safe to repeat (delivery is at least once, and a process may die between the
// account's append and the transfer's): the account event of a step has an id derived from the
// triggering event (annals::derived_event_id), so before acting the step asks the store
// whether that event exists (find_event), and after a failed command it asks again (another
// instance may have appended it). The transfer stream is appended with expected versions and
// derived ids too, so a step recorded twice is recorded once. Commands carry
// annals::caused_by(trigger): the request's correlation id reaches every event of the
// transfer, and each event's causation id is the event that triggered its step.
//
// Deciding between a deposit and a refund is not atomic across two drivers: the subscription's
// lease keeps one active instance of "bank-transfers" (`bank saga` and `bank transfer`, which
// drives the same subscription, take turns), and that is what prevents two concurrent drivers.
#pragma once

#include <annals/command.hpp>
#include <annals/subscription.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "account.hpp"
#include "bank/v1/transfers.pb.h"

namespace bank {

enum class transfer_state {
  none,       // no such transfer
  requested,  // waiting for the source's debit
  debited,    // the money left the source, waiting for the target's credit
  refunding,  // the target refused it, waiting for the refund to the source
  completed,  // the money reached the target
  failed,     // over without moving money (refused by the source, or refunded)
};
// "requested", "debited", ...; parse_transfer_state is its inverse (invalid_argument otherwise).
std::string_view to_string(transfer_state s) noexcept;
annals::result<transfer_state> parse_transfer_state(std::string_view text);

struct transfer {
  using events =
      annals::event_list<v1::TransferRequested, v1::TransferDebited, v1::TransferCompleted,
                         v1::TransferCreditRefused, v1::TransferRefunded, v1::TransferFailed>;
  void apply(const v1::TransferRequested& e);
  void apply(const v1::TransferDebited& e);
  void apply(const v1::TransferCompleted& e);
  void apply(const v1::TransferCreditRefused& e);
  void apply(const v1::TransferRefunded& e);
  void apply(const v1::TransferFailed& e);

  bool finished() const noexcept {
    return state == transfer_state::completed || state == transfer_state::failed;
  }

  transfer_state state = transfer_state::none;
  std::string id;
  std::string from;
  std::string to;
  std::int64_t amount_cents = 0;
  std::string reason;     // why it failed (or is being refunded)
  bool refunded = false;  // the money went back to the source
};

// "transfer-<id>"; transfer_id_of is its inverse (empty for another stream).
std::string transfer_stream(std::string_view transfer_id);
std::string transfer_id_of(std::string_view stream_id);

// Checks an id that becomes part of a stream id: 1..200 bytes the store accepts.
// invalid_argument naming the problem.
annals::result<void> validate_transfer_id(std::string_view id);
annals::result<void> validate_account_id(std::string_view id);

// Requests a transfer. Refused: an amount <= 0, the same account on both sides, or an id
// already used for another transfer. Asking again for the same transfer (same accounts and
// amount) decides nothing: the request is already there.
annals::decision<transfer> request(const transfer& t, std::string_view id, std::string_view from,
                                   std::string_view to, std::int64_t cents);

// ---- The process manager ---------------------------------------------------------------------

// The subscription's name: one active instance per store.
inline constexpr std::string_view transfer_saga_name = "bank-transfers";

// The saga's fault point (annals/fault.hpp; registered in known_points() by this library): an
// account command done, before its outcome is recorded in the transfer stream (which
// triggers the next account command).
inline constexpr std::string_view saga_between_steps = "saga.between_steps";

// The subscription's options: the transfer streams, and the event types that leave a step to
// do (TransferRequested, TransferDebited, TransferCreditRefused).
annals::subscription_options transfer_saga_options();

// Runs the step that `e` (an event of a transfer stream) triggers, if it is still to do, on
// `store`. Idempotent: a repeated or stale event does nothing more. An event of another type
// does nothing. Errors: the store's (busy, io and concurrency_conflict are "try again" for a
// subscription), corruption for an event that does not parse, and rejected when a refund is
// refused (the source account never existed: the log contradicts itself).
// `base` gives the commands' retry settings (max_retries, retry_backoff).
annals::result<void> run_transfer_step(annals::event_store& store, const annals::recorded_event& e,
                                       const annals::command_options& base = {});

// Opens the process manager on `where` (the store's handle, or its URI): a subscription whose
// handler runs run_transfer_step on `store` (the same store, usually the handle itself; it
// must outlive the subscription). `options` defaults to transfer_saga_options(); its filter
// must stay the same.
annals::result<std::unique_ptr<annals::subscription>> open_transfer_saga(
    annals::store_ref where, annals::event_store& store,
    annals::subscription_options options = transfer_saga_options(),
    annals::command_options base = {});

// The transfer's current state, folded from its stream (state none: no such transfer).
annals::result<transfer> load_transfer(annals::event_store& store, std::string_view transfer_id);

}  // namespace bank
