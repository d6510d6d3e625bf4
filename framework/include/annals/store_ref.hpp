// annals/store_ref.hpp — the store a component is built on: a handle, or a URI to open.
//
// Open the store once and build everything from the handle:
//
//   std::shared_ptr<annals::event_store> store = annals::open_store("bank.db", o).value_or_throw();
//   auto runner = annals::projection_runner::open(store, projections).value_or_throw();
//   auto sub = annals::subscription::open(store, "mailer", handler).value_or_throw();
//
// Components that read events (runners, subscriptions, the relay, the HTTP server) share the
// handle (its connection pool, its upcasters, its commit notifications) and keep it alive as
// long as they live; beside it they open only the connections of their own that they need.
// sql_database opens its one connection on the handle's database and keeps no reference. A handle must come from open_store, open_sqlite_store or
// open_postgres_store: a test double has no database for a component's bookkeeping
// (invalid_argument) unless it is adopted with one (store_ref::adopt). Set upcasters once, in
// the store's options.
//
// A URI (a path, sqlite:PATH or postgresql://...) makes the component open the store itself,
// never creating it (not_found), as the command-line tools do, and without upcasters: an
// application with upcasters opens the store with them and passes the handle.
#pragma once

#include <annals/event_store.hpp>
#include <annals/store.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace annals {

class store_ref {
 public:
  // A handle, shared with the component. (Hold open_store's result in a
  // std::shared_ptr<event_store> to share it; a null handle is invalid_argument.)
  template <class Store, class = std::enable_if_t<std::is_base_of_v<event_store, Store> &&
                                                  !std::is_const_v<Store>>>
  store_ref(std::shared_ptr<Store> store) noexcept : store_(std::move(store)) {}
  store_ref(std::string uri) noexcept : uri_(std::move(uri)) {}
  store_ref(std::string_view uri) : uri_(uri) {}
  store_ref(const char* uri) : uri_(uri ? uri : "") {}

  // A store of your own (a test double, a wrapper) for a component: it reads and appends
  // events through `events`, and keeps its own tables (checkpoints, read models, parked
  // events) in the existing database at `database_uri` (a path, sqlite:PATH or
  // postgresql://...; often the file the double wraps). Nothing wakes the component on
  // appends: it polls (poll_interval). Upcasters are the double's business.
  static store_ref adopt(std::shared_ptr<event_store> events, std::string database_uri) {
    store_ref r(std::move(events));
    r.uri_ = std::move(database_uri);
    r.adopted_ = true;
    return r;
  }

  // The handle, or null when given a URI.
  const std::shared_ptr<event_store>& handle() const noexcept { return store_; }
  // The URI, or empty when given a handle; for an adopted store, its database.
  const std::string& uri() const noexcept { return uri_; }
  bool adopted() const noexcept { return adopted_; }

 private:
  std::shared_ptr<event_store> store_;
  std::string uri_;
  bool adopted_ = false;
};

}  // namespace annals
