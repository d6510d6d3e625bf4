// The one parser of store URIs, and what a store opened by Annals tells the components built
// on it (projection runners, subscriptions, relays, sql_database, the HTTP server).
#pragma once

#include <annals/event_store.hpp>
#include <annals/store.hpp>
#include <annals/store_ref.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace annals::store {

// A store's database: a SQLite file or a PostgreSQL database.
struct location {
  enum class backend { sqlite, postgres };
  backend kind = backend::sqlite;
  std::string target;  // the file's path, or the libpq connection URI
  bool postgres() const noexcept { return kind == backend::postgres; }
  // The URI that opens it again: "sqlite:PATH" or the PostgreSQL URI.
  std::string uri() const;
};

// Parses a path, "sqlite:PATH", "postgresql://..." or "postgres://...". Any other scheme
// ("x://...") is invalid_argument naming it.
result<location> parse_uri(std::string_view uri);

// Opens the store at `where` (open.cpp). SQLite takes `options` as they are; PostgreSQL takes
// the same settings (the busy timeout as its lock timeout) and a pool of `pg_pool_size`
// connections (0: postgres_options' default).
result<std::unique_ptr<event_store>> open_at(const location& where, sqlite_options options,
                                             std::size_t pg_pool_size = 0);

class commit_signal;

// Implemented by the stores Annals opens (not by test doubles).
class opened_store {
 public:
  virtual ~opened_store() = default;
  virtual const std::shared_ptr<commit_signal>& commits() const noexcept = 0;
  // The database, for the connections a component opens beside the store's own.
  virtual const location& where() const noexcept = 0;
  virtual bool read_only() const noexcept = 0;
};

// `s` as a store Annals opened, or null for a double.
const opened_store* opened(const event_store& s) noexcept;

// `s` checked for a component (`what`, plural: "projections") built on it: invalid_argument for
// a double, read_only when the component `writes` and the store was opened read-only.
result<const opened_store*> for_component(const event_store& s, bool writes,
                                          std::string_view what);

// The store a component (`what`, plural) is built on, resolved from its store_ref: the
// database, and the handle it reads through (null when given a URI: the component opens its
// own). An adopted double must come with a store (invalid_argument); a handle is checked by
// for_component. Parses the URI otherwise.
struct component_store {
  location where;
  std::shared_ptr<event_store> handle;
};
result<component_store> resolve(const store_ref& ref, bool writes, std::string_view what);

}  // namespace annals::store
