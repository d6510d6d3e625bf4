// annals/sql_database.hpp: the projection backends' writer connection, for application tables.
#include <annals/sql_database.hpp>

#include "projection/internal.hpp"

#include <fmt/format.h>

#include <mutex>

namespace annals {

namespace {

class database final : public sql_database {
 public:
  explicit database(std::unique_ptr<detail::sql_connection> c) : conn_(std::move(c)) {}

  result<void> write(const std::function<result<void>(sql_tx&)>& fn) override {
    std::lock_guard lock(mu_);
    return detail::in_write_tx(*conn_, [&](sql_tx& tx) -> result<void> {
      try {
        return fn(tx);
      } catch (const std::exception& e) {
        return error(errc::handler_failed, fmt::format("the write function threw: {}", e.what()));
      }
    });
  }
  std::string_view dialect() const noexcept override {
    return conn_->dialect() == detail::sql_dialect::postgres ? "postgresql" : "sqlite";
  }

 private:
  std::mutex mu_;  // one transaction at a time on the connection
  std::unique_ptr<detail::sql_connection> conn_;
};

}  // namespace

result<std::unique_ptr<sql_database>> sql_database::open(store_ref store,
                                                         sql_database_options options) {
  if (options.busy_timeout_ms < 0) {
    return error(errc::invalid_argument, "sql_database_options::busy_timeout_ms is negative");
  }
  detail::backend_options bo;
  bo.busy_timeout_ms = options.busy_timeout_ms;
  bo.sql_only = true;
  auto b = detail::open_backend(store, bo, "application tables");
  if (!b) return std::move(b).error();
  auto& conn = *b->writer;
  // open_backend sets up a writer for derived data (commits not waiting for the disk).
  if (options.durable) {
    const bool pg = conn.dialect() == detail::sql_dialect::postgres;
    if (auto r = conn.exec(pg ? "SET synchronous_commit = on" : "PRAGMA synchronous=FULL",
                           "cannot set durability");
        !r) {
      return r.error();
    }
  }
  return std::unique_ptr<sql_database>(std::make_unique<database>(std::move(b->writer)));
}

}  // namespace annals
