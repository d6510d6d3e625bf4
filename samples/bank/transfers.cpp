#include "transfers.hpp"

#include <annals/fault.hpp>

#include <fmt/format.h>

#include <utility>

namespace bank {

// ---- The transfer aggregate ------------------------------------------------------------------

namespace {
constexpr std::string_view stream_prefix = "transfer-";
constexpr std::pair<transfer_state, std::string_view> state_names[] = {
    {transfer_state::none, "none"},           {transfer_state::requested, "requested"},
    {transfer_state::debited, "debited"},     {transfer_state::refunding, "refunding"},
    {transfer_state::completed, "completed"}, {transfer_state::failed, "failed"},
};
}  // namespace

std::string_view to_string(transfer_state s) noexcept {
  for (const auto& [state, name] : state_names) {
    if (state == s) return name;
  }
  return "unknown";
}

annals::result<transfer_state> parse_transfer_state(std::string_view text) {
  for (const auto& [state, name] : state_names) {
    if (name == text) return state;
  }
  return annals::error(annals::errc::invalid_argument,
                       fmt::format("'{}' is not a transfer state (requested, debited, refunding, "
                                   "completed, failed)",
                                   text.substr(0, 40)));
}

void transfer::apply(const v1::TransferRequested& e) {
  state = transfer_state::requested;
  id = e.transfer_id();
  from = e.from_account();
  to = e.to_account();
  amount_cents = e.amount_cents();
}
void transfer::apply(const v1::TransferDebited&) { state = transfer_state::debited; }
void transfer::apply(const v1::TransferCompleted&) { state = transfer_state::completed; }
void transfer::apply(const v1::TransferCreditRefused& e) {
  state = transfer_state::refunding;
  reason = e.reason();
}
void transfer::apply(const v1::TransferRefunded&) { refunded = true; }
void transfer::apply(const v1::TransferFailed& e) {
  state = transfer_state::failed;
  reason = e.reason();
  refunded = e.refunded();
}

std::string transfer_stream(std::string_view transfer_id) {
  return std::string(stream_prefix) + std::string(transfer_id);
}

std::string transfer_id_of(std::string_view stream_id) {
  if (stream_id.substr(0, stream_prefix.size()) != stream_prefix) return {};
  return std::string(stream_id.substr(stream_prefix.size()));
}

namespace {
// Ids of transfers and accounts become part of stream ids: 1..200 bytes the store accepts.
annals::result<void> validate_id(std::string_view what, std::string_view id,
                                 const std::string& stream) {
  if (id.empty())
    return annals::error(annals::errc::invalid_argument, fmt::format("the {} id is empty", what));
  if (id.size() > 200) {
    return annals::error(annals::errc::invalid_argument,
                         fmt::format("the {} id is longer than 200 bytes", what));
  }
  if (auto r = annals::validate_stream_id(stream); !r) {
    return annals::error(annals::errc::invalid_argument,
                         fmt::format("invalid {} id: {}", what, r.error().message()));
  }
  return {};
}
}  // namespace

annals::result<void> validate_transfer_id(std::string_view id) {
  return validate_id("transfer", id, transfer_stream(id));
}

annals::result<void> validate_account_id(std::string_view id) {
  return validate_id("account", id, stream_for(id));
}

annals::decision<transfer> request(const transfer& t, std::string_view id, std::string_view from,
                                   std::string_view to, std::int64_t cents) {
  using decision = annals::decision<transfer>;
  for (auto account : {from, to}) {
    if (auto ok = validate_account_id(account); !ok) {
      return decision::reject(ok.error().message());
    }
  }
  if (from == to) return decision::reject("a transfer needs two different accounts");
  if (cents <= 0) return decision::reject("the amount must be greater than zero");
  if (t.state != transfer_state::none) {
    if (t.from == from && t.to == to && t.amount_cents == cents) return decision{};
    return decision::reject(fmt::format("transfer '{}' already exists ({} from '{}' to '{}')", id,
                                        format_cents(t.amount_cents), t.from, t.to));
  }
  v1::TransferRequested e;
  e.set_transfer_id(std::string(id));
  e.set_from_account(std::string(from));
  e.set_to_account(std::string(to));
  e.set_amount_cents(cents);
  return decision::emit(std::move(e));
}

annals::result<transfer> load_transfer(annals::event_store& store, std::string_view transfer_id) {
  auto loaded = annals::load<transfer>(store, transfer_stream(transfer_id));
  if (!loaded) return std::move(loaded).error();
  return std::move(loaded->state);
}

// ---- The process manager ---------------------------------------------------------------------

namespace {

using annals::recorded_event;
using status = annals::result<void>;
using transfer_decision = annals::decision<transfer>;

// The options of a command that step `step` of the process manager runs because of `trigger`:
// caused by it (correlation and causation), and its events' ids derived from the trigger's id
// and the step, so the same step for the same trigger always writes the same ids.
annals::command_options step_options(const annals::command_options& base,
                                     const recorded_event& trigger, std::string step) {
  annals::command_options o = annals::caused_by(trigger);
  o.max_retries = base.max_retries;
  o.retry_backoff = base.retry_backoff;
  o.event_ids = [source = trigger.event_id, step = std::move(step)](std::size_t i) {
    return annals::derived_event_id(source, i == 0 ? step : fmt::format("{}#{}", step, i));
  };
  return o;
}

// The result of a step's account command: done (now or earlier), or refused by the account.
struct account_outcome {
  bool done = false;
  std::string refusal;  // the account's reason, when not done
};

// Runs `decide` on the account's stream as step `step` of `trigger`, unless that step's event
// is already stored (a redelivery, or a crash after the account's append): at most once.
template <class Decide>
annals::result<account_outcome> account_step(annals::event_store& store,
                                             const recorded_event& trigger, std::string step,
                                             const std::string& account_id, Decide&& decide,
                                             const annals::command_options& base) {
  const annals::command_options o = step_options(base, trigger, std::move(step));
  const std::string event_id = o.event_ids(0);
  const std::string stream = stream_for(account_id);
  auto stored = [&]() -> annals::result<bool> {
    auto found = store.find_event(event_id);
    if (!found) return std::move(found).error();
    if (!*found) return false;
    if ((*found)->stream_id != stream) {
      return annals::error(annals::errc::corruption,
                           fmt::format("event {} of transfer step should be in '{}', found in '{}'",
                                       event_id, stream, (*found)->stream_id));
    }
    return true;
  };
  auto before = stored();
  if (!before) return std::move(before).error();
  if (*before) return account_outcome{true, {}};
  auto r = annals::handle<account>(store, stream, decide, o);
  if (r) return account_outcome{true, {}};
  // Another instance may have run this step meanwhile (its append made ours fail, or changed
  // the balance our decision saw): the stored event is the truth.
  auto after = stored();
  if (!after) return std::move(after).error();
  if (*after) return account_outcome{true, {}};
  if (r.error().kind() == annals::errc::rejected) {
    return account_outcome{false, r.error().message()};
  }
  return std::move(r).error();
}

// Records a step's outcome in the transfer stream: the events of `outcome` if the transfer is
// still in state `from` (else the outcome is already there), with ids derived from the trigger.
status record(annals::event_store& store, const recorded_event& trigger, std::string step,
              transfer_state from, const std::function<transfer_decision(const transfer&)>& outcome,
              const annals::command_options& base) {
  auto r = annals::handle<transfer>(
      store, trigger.stream_id,
      [&](const transfer& t) { return t.state == from ? outcome(t) : transfer_decision{}; },
      step_options(base, trigger, std::move(step)));
  if (!r) return std::move(r).error();
  return {};
}

// One step of the process manager: what a trigger event asks for while the transfer is in
// state `from`. The account command runs `decide(account, account_id, transfer_id,
// other_account, amount)`; its outcome is recorded as `done`, or `refused` with the account's
// reason (no `refused`: a refusal is an error, retried then parked by the subscription).
struct step {
  transfer_state from;
  const char* command;  // names the account event's derived id: "withdraw", "deposit", "refund"
  std::string transfer::*account;
  std::string transfer::*other;
  annals::decision<bank::account> (*decide)(const bank::account&, std::string_view,
                                            std::string_view, std::string_view, std::int64_t);
  const char* done_name;  // names the recorded events' derived ids
  transfer_decision (*done)(const transfer&);
  const char* refused_name;
  transfer_decision (*refused)(const transfer&, const std::string& reason);
};

template <class E>
E event_of(const transfer& t) {
  E e;
  e.set_transfer_id(t.id);
  return e;
}

template <class E>
transfer_decision emit(const transfer& t) {
  return transfer_decision::emit(event_of<E>(t));
}

template <class E>
transfer_decision emit_with_reason(const transfer& t, const std::string& reason) {
  auto e = event_of<E>(t);
  e.set_reason(reason);
  return transfer_decision::emit(std::move(e));
}

// The refund and the failure, in one append.
transfer_decision refunded_and_failed(const transfer& t) {
  auto failed = event_of<v1::TransferFailed>(t);
  failed.set_reason(t.reason);
  failed.set_refunded(true);
  return transfer_decision::emit(event_of<v1::TransferRefunded>(t), std::move(failed));
}

// TransferRequested: debit the source; refused (insufficient funds, closed, unknown): failed.
constexpr step debit_source{.from = transfer_state::requested,
                            .command = "withdraw",
                            .account = &transfer::from,
                            .other = &transfer::to,
                            .decide = &withdraw_for_transfer,
                            .done_name = "debited",
                            .done = &emit<v1::TransferDebited>,
                            .refused_name = "failed",
                            .refused = &emit_with_reason<v1::TransferFailed>};
// TransferDebited: credit the target; refused (closed, unknown): a refund is due.
constexpr step credit_target{.from = transfer_state::debited,
                             .command = "deposit",
                             .account = &transfer::to,
                             .other = &transfer::from,
                             .decide = &deposit_for_transfer,
                             .done_name = "completed",
                             .done = &emit<v1::TransferCompleted>,
                             .refused_name = "credit-refused",
                             .refused = &emit_with_reason<v1::TransferCreditRefused>};
// TransferCreditRefused: give the money back to the source (never refused for an account that
// was debited), then record the refund and the failure.
constexpr step refund_source{.from = transfer_state::refunding,
                             .command = "refund",
                             .account = &transfer::from,
                             .other = &transfer::to,
                             .decide = &refund_transfer,
                             .done_name = "refunded",
                             .done = &refunded_and_failed,
                             .refused_name = nullptr,
                             .refused = nullptr};

status run_step(annals::event_store& store, const recorded_event& trigger, const step& s,
                const annals::command_options& base) {
  auto loaded = annals::load<transfer>(store, trigger.stream_id);
  if (!loaded) return std::move(loaded).error();
  const transfer& t = loaded->state;
  // Past this state: a redelivery, or another instance got there first.
  if (t.state != s.from) return {};
  const std::string& account_id = t.*s.account;
  const std::string& other = t.*s.other;
  auto outcome = account_step(
      store, trigger, s.command, account_id,
      [&](const account& a) { return s.decide(a, account_id, t.id, other, t.amount_cents); }, base);
  if (!outcome) return std::move(outcome).error();
  // The account command is done; its outcome, which triggers the next step, is not recorded.
  if (auto f = annals::fault::point(saga_between_steps); !f) return f;
  if (outcome->done) return record(store, trigger, s.done_name, s.from, s.done, base);
  if (!s.refused) {
    return annals::error(
        annals::errc::rejected,
        fmt::format("transfer '{}': the {} of {} for account '{}' was refused: {}", t.id, s.command,
                    format_cents(t.amount_cents), account_id, outcome->refusal));
  }
  return record(
      store, trigger, s.refused_name, s.from,
      [&](const transfer& now) { return s.refused(now, outcome->refusal); }, base);
}

}  // namespace

annals::subscription_options transfer_saga_options() {
  annals::fault::register_point(saga_between_steps);  // listed once the saga is configured
  annals::subscription_options o;
  o.filter.stream_prefix = std::string(stream_prefix);
  o.filter.event_types = {v1::TransferRequested::descriptor()->full_name(),
                          v1::TransferDebited::descriptor()->full_name(),
                          v1::TransferCreditRefused::descriptor()->full_name()};
  return o;
}

annals::result<void> run_transfer_step(annals::event_store& store, const recorded_event& e,
                                       const annals::command_options& base) {
  if (transfer_id_of(e.stream_id).empty()) return {};
  if (e.type == v1::TransferRequested::descriptor()->full_name()) {
    return run_step(store, e, debit_source, base);
  }
  if (e.type == v1::TransferDebited::descriptor()->full_name()) {
    return run_step(store, e, credit_target, base);
  }
  if (e.type == v1::TransferCreditRefused::descriptor()->full_name()) {
    return run_step(store, e, refund_source, base);
  }
  return {};
}

annals::result<std::unique_ptr<annals::subscription>> open_transfer_saga(
    annals::store_ref where, annals::event_store& store, annals::subscription_options options,
    annals::command_options base) {
  annals::subscription_handler handler = [&store, base = std::move(base)](const recorded_event& e) {
    return run_transfer_step(store, e, base);
  };
  return annals::subscription::open(std::move(where), std::string(transfer_saga_name), std::move(handler),
                                    std::move(options));
}

}  // namespace bank
