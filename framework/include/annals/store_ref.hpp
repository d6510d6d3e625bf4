// annals/store_ref.hpp — the store a component is built on: a handle, or a URI to open.
//
// Open the store once and build everything from the handle:
//
//   std::shared_ptr<annals::event_store> store = annals::open_store("bank.db", o).value_or_throw();
//   auto runner = annals::projection_runner::open(store, projections).value_or_throw();
//   auto sub = annals::subscription::open(store, "mailer", handler).value_or_throw();
//
// Components built on a handle share it (its connection pool, its upcasters, its commit
// notifications) and keep it alive as long as they live; they open only the connections of
// their own that they need beside it. A handle must come from open_store, open_sqlite_store or
// open_postgres_store: a test double has no database for a component's bookkeeping
// (invalid_argument). Set upcasters once, in the store's options.
//
// A URI (a path, sqlite:PATH or postgresql://...) makes the component open the store itself,
// never creating it (not_found), as the command-line tools do.
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
  // A handle: shared with the component. A unique_ptr (open_store's result) is handed over.
  template <class Store, class = std::enable_if_t<std::is_base_of_v<event_store, Store>>>
  store_ref(std::shared_ptr<Store> store) noexcept : store_(std::move(store)) {}
  template <class Store, class = std::enable_if_t<std::is_base_of_v<event_store, Store>>>
  store_ref(std::unique_ptr<Store>&& store) : store_(std::move(store)) {}
  store_ref(std::string uri) noexcept : uri_(std::move(uri)) {}
  store_ref(std::string_view uri) : uri_(uri) {}
  store_ref(const char* uri) : uri_(uri ? uri : "") {}

  // The handle, or null when given a URI.
  const std::shared_ptr<event_store>& handle() const noexcept { return store_; }
  // The URI, or empty when given a handle.
  const std::string& uri() const noexcept { return uri_; }

 private:
  std::shared_ptr<event_store> store_;
  std::string uri_;
};

}  // namespace annals
