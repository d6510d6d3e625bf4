// annals/projection.hpp — projections: the log turned into read models.
//
//   struct balances {
//     static constexpr std::string_view name = "account_balances";
//     static constexpr int version = 1;    // bump when the rows or handlers change: rebuild
//     using events = annals::event_list<bank::v1::AccountOpened, bank::v1::MoneyDeposited>;
//     using tables = annals::table_list<balance_row>;
//     annals::result<void> handle(const bank::v1::AccountOpened& e,
//                                 const annals::recorded_event& meta, annals::sql_tx& tx);
//     annals::result<void> handle(const bank::v1::MoneyDeposited& e,
//                                 const annals::recorded_event& meta, annals::sql_tx& tx);
//   };
//
// One handle(const E&, const recorded_event&, sql_tx&) per listed event, returning
// result<void> or void; a missing one fails to compile and names the event type. A handler that
// returns an error or throws is retried, then its event is parked and the projection is stuck
// (see projection_runner.hpp): it never silently moves past an event.
#pragma once

#include <annals/aggregate.hpp>
#include <annals/read_model.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace annals {

template <class P, class E>
concept handles_event = requires(P& p, const E& e, const recorded_event& m, sql_tx& tx) {
  p.handle(e, m, tx);
};

template <class P, class E>
struct projection_has_no_handler_for_event {
  static_assert(handles_event<P, E>,
                "annals: this projection lists an event type in its event_list but has no "
                "handle(const Event&, const annals::recorded_event&, annals::sql_tx&) for it; the "
                "projection and the event type are the template arguments of "
                "projection_has_no_handler_for_event<Projection, Event>");
  static constexpr bool value = true;
};

// A projection with its types erased: what runners and stores work with.
struct projection_def {
  std::string name;
  int version = 1;
  std::vector<std::string> event_types;        // full Protobuf names, for filtered reads
  std::vector<const table_shape*> tables;      // read-model tables it owns
  // Decodes the event and calls the typed handler. May throw; the runner treats a throw as an
  // error of the handler.
  std::function<result<void>(const recorded_event&, sql_tx&)> apply;
};

namespace detail {
template <class P, class... E>
std::vector<std::string> type_names(event_list<E...>*) {
  (void)(projection_has_no_handler_for_event<P, E>::value && ...);
  (void)(event_type_is_not_a_protobuf_message<E>::value && ...);
  return {E::descriptor()->full_name()...};
}

template <class P, class... E>
result<void> dispatch_projection(P& p, const recorded_event& e, sql_tx& tx, event_list<E...>*) {
  std::optional<result<void>> out;
  auto try_one = [&]<class T>(T*) {
    if (out || e.type != T::descriptor()->full_name()) return;
    T message;
    if (!detail::parse_payload(message, e.payload)) {
      out = undecodable_event(e);
      return;
    }
    if constexpr (!handles_event<P, T>) {
      // Reported by projection_has_no_handler_for_event; no second, noisier error here.
      out = result<void>();
    } else if constexpr (std::is_void_v<decltype(p.handle(message, e, tx))>) {
      p.handle(message, e, tx);
      out = result<void>();
    } else {
      out = p.handle(message, e, tx);
    }
  };
  (try_one(static_cast<E*>(nullptr)), ...);
  if (!out) return unknown_event_type(e, detail::type_name<P>());
  return std::move(*out);
}
}  // namespace detail

// Type-erases a projection. The instance is shared by the runner's calls (one at a time).
template <class P>
std::shared_ptr<const projection_def> make_projection(P projection = {}) {
  static_assert(requires { P::name; P::version; typename P::events; typename P::tables; },
                "annals: a projection needs `static constexpr std::string_view name`, "
                "`static constexpr int version`, `using events = annals::event_list<...>` and "
                "`using tables = annals::table_list<...>`");
  auto def = std::make_shared<projection_def>();
  def->name = std::string(P::name);
  def->version = P::version;
  def->event_types = detail::type_names<P>(static_cast<typename P::events*>(nullptr));
  def->tables = P::tables::shapes();
  auto instance = std::make_shared<P>(std::move(projection));
  def->apply = [instance](const recorded_event& e, sql_tx& tx) {
    return detail::dispatch_projection(*instance, e, tx,
                                       static_cast<typename P::events*>(nullptr));
  };
  return def;
}

using projection_list = std::vector<std::shared_ptr<const projection_def>>;

}  // namespace annals
