// consumer_admin (annals/consumers.hpp): projections and subscriptions side by side. The
// projection half reads and writes the projection bookkeeping on a connection of its own
// (with the runner's own retry/skip, projection/internal.hpp); the subscription half is a
// subscription_admin on the same store handle.
#include <annals/consumers.hpp>
#include <annals/subscription.hpp>

#include "consumer/lag.hpp"
#include "consumer/tables.hpp"
#include "projection/internal.hpp"

#include <fmt/format.h>

namespace annals {

namespace {

constexpr std::string_view projection_prefix = "projection:";
constexpr std::string_view subscription_prefix = "subscription:";

class admin_impl final : public consumer_admin {
 public:
  admin_impl(detail::backend b, std::unique_ptr<subscription_admin> subs, bool read_only)
      : b_(std::move(b)), subs_(std::move(subs)), read_only_(read_only) {}

  result<std::vector<consumer_status>> list() override {
    auto out = projections();
    if (!out) return out;
    auto subs = subs_->list();
    if (!subs) return std::move(subs).error();
    for (auto& st : subs.value()) out->push_back(std::move(st));
    return out;
  }

  result<std::vector<parked_event>> parked(std::string_view name) override {
    auto who = find(name);
    if (!who) return std::move(who).error();
    if (who->kind == consumer_kind::projection) {
      auto tx = detail::sql_tx_access::make(*b_.writer);
      return detail::read_parked(tx, "projection", who->name, who->sources.parked);
    }
    return subs_->parked(who->name);
  }

  result<std::int64_t> retry(std::string_view name, std::int64_t position) override {
    auto who = resolve_for("retry a parked event of", name, position);
    if (!who) return std::move(who).error();
    if (who->kind == consumer_kind::subscription) return subs_->retry(who->name, position);
    std::int64_t n = 0;
    auto r = detail::in_write_tx(*b_.writer, [&](sql_tx& tx) -> result<void> {
      auto marked = detail::retry_parked(tx, who->name, position);
      if (!marked) return marked.error();
      n = marked.value();
      if (n == 0) {  // rolled back: nothing changes when nothing waits
        return error(errc::not_found,
                     fmt::format("projection '{}' has no parked events waiting", who->name));
      }
      return {};
    });
    if (!r) return r.error();
    return n;
  }

  result<std::int64_t> skip(std::string_view name, std::int64_t position) override {
    auto who = resolve_for("skip a parked event of", name, position);
    if (!who) return std::move(who).error();
    if (who->kind == consumer_kind::subscription) return subs_->skip(who->name, position);
    if (position == 0) {
      return error(errc::invalid_argument,
                   fmt::format("projection '{}': give the position of the parked event to skip "
                               "(a projection skips only the event it is stuck at)",
                               who->name));
    }
    auto r = detail::in_write_tx(*b_.writer, [&](sql_tx& tx) {
      return detail::skip_parked(tx, who->name, position);
    });
    // Not stuck there: no such parked event waits (as for a subscription).
    if (!r && r.error().kind() == errc::invalid_argument) {
      return error(errc::not_found, r.error().message());
    }
    if (!r) return r.error();
    return std::int64_t{1};
  }

 private:
  struct found {
    consumer_kind kind;
    std::string name;
    detail::consumer_sources sources;  // where it was found
  };

  // The projection rows (empty when no runner ever ran on this store).
  result<std::vector<consumer_status>> projections() {
    std::vector<consumer_status> out;
    auto src = detail::reading_sources(*b_.writer);
    if (!src) return std::move(src).error();
    if (src->consumers.empty()) return out;
    auto tx = detail::sql_tx_access::make(*b_.writer);
    auto r = tx.query(detail::projections_sql(*src), {}, [&](const sql_row& row) {
      out.push_back(detail::projection_row(row));
      return true;
    });
    if (!r) return std::move(r).error();
    auto head = b_.store->head_position();
    if (!head) return std::move(head).error();
    detail::measure_projections(*b_.store, *head, out);
    return out;
  }

  // Which consumer `name` is: "projection:NAME" or "subscription:NAME" when both kinds have
  // NAME (a consumer actually named so is found under its full name first).
  result<found> find(std::string_view name) {
    auto src = detail::reading_sources(*b_.writer);
    if (!src) return std::move(src).error();
    auto named = [&](consumer_kind kind, std::string_view n) {
      return detail::has_consumer(*b_.writer, *src, to_string(kind), n);
    };
    auto p = named(consumer_kind::projection, name);
    if (!p) return std::move(p).error();
    auto s = named(consumer_kind::subscription, name);
    if (!s) return std::move(s).error();
    if (p.value() && s.value()) {
      return error(errc::invalid_argument,
                   fmt::format("both a projection and a subscription are named '{0}': write "
                               "projection:{0} or subscription:{0}",
                               name));
    }
    if (p.value()) return found{consumer_kind::projection, std::string(name), *src};
    if (s.value()) return found{consumer_kind::subscription, std::string(name), *src};
    for (auto [prefix, kind] : {std::pair{projection_prefix, consumer_kind::projection},
                                std::pair{subscription_prefix, consumer_kind::subscription}}) {
      if (!name.starts_with(prefix)) continue;
      auto rest = name.substr(prefix.size());
      auto yes = named(kind, rest);
      if (!yes) return std::move(yes).error();
      if (yes.value()) return found{kind, std::string(rest), *src};
    }
    return error(errc::not_found, fmt::format("no projection or subscription named '{}'", name));
  }

  result<found> resolve_for(std::string_view action, std::string_view name,
                            std::int64_t position) {
    if (read_only_) {
      return error(errc::read_only,
                   fmt::format("cannot {} '{}': the consumer admin was opened read-only (use "
                               "consumer_admin::open)",
                               action, name));
    }
    if (position < 0) return error(errc::invalid_argument, "position must be >= 0");
    return find(name);
  }

  detail::backend b_;  // the projection bookkeeping's connection, and the store
  std::unique_ptr<subscription_admin> subs_;
  const bool read_only_;
};

result<std::unique_ptr<consumer_admin>> open_on(const store_ref& store, bool read_only) {
  detail::backend_options bo;
  bo.read_only = read_only;
  bo.coordination = false;  // the admin runs no consumer
  auto b = detail::open_backend(store, bo, "consumer admins");
  if (!b) return std::move(b).error();
  // The subscription half on the same handle (one store opened, also from a URI).
  store_ref handle = store.adopted() ? store : store_ref(b->store);
  auto subs = read_only ? subscription_admin::open_read_only(handle)
                        : subscription_admin::open(handle);
  if (!subs) return std::move(subs).error();
  return std::unique_ptr<consumer_admin>(
      std::make_unique<admin_impl>(std::move(b).value(), std::move(subs).value(), read_only));
}

}  // namespace

result<std::unique_ptr<consumer_admin>> consumer_admin::open(store_ref store) {
  return open_on(store, false);
}

result<std::unique_ptr<consumer_admin>> consumer_admin::open_read_only(store_ref store) {
  return open_on(store, true);
}

}  // namespace annals
