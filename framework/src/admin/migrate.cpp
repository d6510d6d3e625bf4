// copy_store and compare_stores (annals/admin.hpp): `annals migrate` between any two backends,
// through store_admin's dump and import_session only.
#include <annals/admin.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

namespace annals {
namespace {

constexpr std::size_t max_listed = 100;
constexpr std::size_t channel_capacity = 512;  // events read ahead from the first store

// A source row the import refused is damage in the source, not bad input.
error cannot_copy(const std::string& what, const error& e) {
  if (e.kind() != errc::invalid_argument) return e;
  return error(errc::corruption,
               fmt::format("{} cannot be copied: {} (run annals verify on the source)", what,
                           e.message()));
}

// Differences, at most max_listed kept, the rest counted.
class differences {
 public:
  void add(std::string s) {
    if (list_.size() < max_listed) {
      list_.push_back(std::move(s));
    } else {
      ++more_;
    }
  }
  std::vector<std::string> take() {
    if (more_) list_.push_back(fmt::format("... and {} more differences", more_));
    return std::move(list_);
  }

 private:
  std::vector<std::string> list_;
  std::int64_t more_ = 0;
};

// One store's dump, produced on a thread of its own and consumed one event at a time.
class dump_channel {
 public:
  explicit dump_channel(store_admin& admin) {
    thread_ = std::thread([this, &admin] { run(admin); });
  }
  ~dump_channel() {
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  dump_channel(const dump_channel&) = delete;
  dump_channel& operator=(const dump_channel&) = delete;

  // The schemas and event count, once the dump has begun; the dump's error if it failed first.
  result<std::pair<std::vector<stored_schema>, std::int64_t>> header() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return begun_ || done_; });
    if (!begun_) return failure();
    return std::pair{schemas_, count_};
  }
  // The next event, nullopt at the end; the dump's error if it failed.
  result<std::optional<raw_event>> next() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty() || done_; });
    if (queue_.empty()) {
      if (failed_) return failure();
      return std::optional<raw_event>{};
    }
    raw_event e = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return std::optional<raw_event>{std::move(e)};
  }

 private:
  error failure() const { return failed_ ? *failed_ : error(errc::io, "the dump ended early"); }

  void run(store_admin& admin) noexcept {
    result<void> r;
    try {
      dump_visitor v;
      v.begin = [&](const std::vector<stored_schema>& schemas, std::int64_t count) -> result<void> {
        std::lock_guard lock(mu_);
        schemas_ = schemas;
        count_ = count;
        begun_ = true;
        cv_.notify_all();
        return {};
      };
      v.event = [&](const raw_event& e) -> result<void> {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return queue_.size() < channel_capacity || cancelled_; });
        if (cancelled_) return error(errc::io, "comparison stopped");
        queue_.push_back(e);
        cv_.notify_all();
        return {};
      };
      r = admin.dump(v);
    } catch (const std::exception& e) {
      r = error(errc::io, fmt::format("cannot read the store: {}", e.what()));
    }
    std::lock_guard lock(mu_);
    if (!r) failed_ = r.error();
    done_ = true;
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<raw_event> queue_;
  std::vector<stored_schema> schemas_;
  std::int64_t count_ = 0;
  bool begun_ = false, done_ = false, cancelled_ = false;
  std::optional<error> failed_;
  std::thread thread_;
};

std::string hex(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes.substr(0, 16)) out += fmt::format("{:02x}", c);
  if (bytes.size() > 16) out += "...";
  return out;
}

void compare_events(const raw_event& a, const raw_event& b, differences& diff) {
  std::vector<std::string> fields;
  if (a.position != b.position) fields.push_back(fmt::format("position {}", b.position));
  if (a.stream_id != b.stream_id) fields.push_back(fmt::format("stream '{}'", b.stream_id));
  if (a.stream_version != b.stream_version) {
    fields.push_back(fmt::format("stream version {}", b.stream_version));
  }
  if (a.event_id != b.event_id) fields.push_back(fmt::format("event id {}", hex(b.event_id)));
  if (a.type != b.type) fields.push_back(fmt::format("type {}", b.type));
  if (a.recorded_at_us != b.recorded_at_us) {
    fields.push_back(fmt::format("recorded_at {}", b.recorded_at_us));
  }
  if (a.metadata != b.metadata) {
    fields.push_back(b.metadata ? fmt::format("metadata {}", hex(*b.metadata))
                                : std::string("metadata NULL"));
  }
  if (a.payload != b.payload) {
    fields.push_back(fmt::format("payload of {} bytes ({})", b.payload.size(), hex(b.payload)));
  }
  if (!fields.empty()) {
    std::string list;
    for (const auto& f : fields) list += (list.empty() ? "" : ", ") + f;
    diff.add(fmt::format("event at position {} (stream '{}' version {}): the second store has {}",
                         a.position, a.stream_id, a.stream_version, list));
  }
}

bool same_schema(const stored_schema& a, const stored_schema& b) {
  return a.type == b.type && a.version == b.version && a.mode == b.mode &&
         a.fingerprint == b.fingerprint && a.descriptor_set == b.descriptor_set &&
         a.registered_at_us == b.registered_at_us;
}

result<std::vector<stream_info>> all_streams(store_admin& admin) {
  std::vector<stream_info> out;
  auto r = admin.list_streams("", -1, [&](const stream_info& s) {
    out.push_back(s);
    return true;
  });
  if (!r) return r.error();
  return out;
}

}  // namespace

result<copy_summary> copy_store(store_admin& from, store_admin& to) {
  auto session = to.begin_import();
  if (!session) return std::move(session).error();
  copy_summary out;
  dump_visitor v;
  v.begin = [&](const std::vector<stored_schema>& schemas, std::int64_t) -> result<void> {
    for (const auto& s : schemas) {
      if (auto r = (*session)->add_schema(s); !r) {
        return cannot_copy(fmt::format("schema {} version {}", s.type, s.version), r.error());
      }
      ++out.schemas;
    }
    return {};
  };
  v.event = [&](const raw_event& e) -> result<void> {
    if (auto r = (*session)->add_event(e); !r) {
      return cannot_copy(fmt::format("the event at position {}", e.position), r.error());
    }
    ++out.events;
    // Versions are checked contiguous from 0: a stream's first event opens it.
    if (e.stream_version == 0) ++out.streams;
    return {};
  };
  if (auto r = from.dump(v); !r) return r.error();  // the session rolls back
  if (auto r = (*session)->commit(); !r) return r.error();
  return out;
}

result<std::vector<std::string>> compare_stores(store_admin& a, store_admin& b) {
  differences diff;
  {
    // `a` is read on a thread of its own, `b` here, side by side.
    dump_channel first(a);
    dump_visitor v;
    v.begin = [&](const std::vector<stored_schema>& schemas, std::int64_t count) -> result<void> {
      auto h = first.header();
      if (!h) return h.error();
      const auto& [theirs, their_count] = *h;
      if (their_count != count) {
        diff.add(fmt::format("the first store has {} events, the second {}", their_count, count));
      }
      for (const auto& s : theirs) {
        auto it = std::find_if(schemas.begin(), schemas.end(), [&](const stored_schema& x) {
          return x.type == s.type && x.version == s.version;
        });
        if (it == schemas.end()) {
          diff.add(fmt::format("schema {} version {} is missing from the second store", s.type,
                               s.version));
        } else if (!same_schema(s, *it)) {
          diff.add(fmt::format("schema {} version {} differs", s.type, s.version));
        }
      }
      for (const auto& s : schemas) {
        if (std::none_of(theirs.begin(), theirs.end(), [&](const stored_schema& x) {
              return x.type == s.type && x.version == s.version;
            })) {
          diff.add(fmt::format("schema {} version {} is only in the second store", s.type,
                               s.version));
        }
      }
      return {};
    };
    v.event = [&](const raw_event& e) -> result<void> {
      auto next = first.next();
      if (!next) return next.error();
      if (!*next) {
        diff.add(fmt::format("the event at position {} is only in the second store", e.position));
      } else {
        compare_events(**next, e, diff);
      }
      return {};
    };
    if (auto r = b.dump(v); !r) return r.error();
    for (;;) {
      auto next = first.next();
      if (!next) return next.error();
      if (!*next) break;
      diff.add(fmt::format("the event at position {} is only in the first store",
                           (*next)->position));
    }
  }
  auto sa = all_streams(a);
  if (!sa) return std::move(sa).error();
  auto sb = all_streams(b);
  if (!sb) return std::move(sb).error();
  if (sa->size() != sb->size()) {
    diff.add(fmt::format("the first store has {} streams, the second {}", sa->size(), sb->size()));
  }
  for (std::size_t i = 0; i < std::min(sa->size(), sb->size()); ++i) {
    const auto &x = (*sa)[i], &y = (*sb)[i];
    if (x.stream_id != y.stream_id || x.version != y.version || x.event_count != y.event_count) {
      diff.add(fmt::format("stream '{}' (version {}, {} events) is '{}' (version {}, {} events) "
                           "in the second store",
                           x.stream_id, x.version, x.event_count, y.stream_id, y.version,
                           y.event_count));
    }
  }
  return diff.take();
}

}  // namespace annals
