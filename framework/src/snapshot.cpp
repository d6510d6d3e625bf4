// Aggregate snapshots (annals/snapshot.hpp): the key, and loading from a snapshot plus tail.
#include <annals/aggregate.hpp>
#include <annals/schema.hpp>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

#include <cstdio>
#include <exception>

namespace annals::detail {
namespace {

void warn(const load_options& o, const std::string& message) {
  if (o.warning) {
    o.warning(message);
    return;
  }
  fmt::print(stderr, "annals: warning: {}\n", message);
}

// From the snapshot under the aggregate's key plus the events after it; nullopt (state reset)
// when there is no usable snapshot. Errors are those of the tail's events only.
result<std::optional<load_outcome>> from_snapshot(event_store& store, std::string_view stream_id,
                                                  const load_options& o, const load_hooks& h) {
  auto snap = store.read_snapshot(stream_id, *h.snapshot.key);
  if (!snap) {
    warn(o, fmt::format("cannot read the snapshot of stream '{}' ({}); folding the whole stream",
                        stream_id, snap.error().message()));
    return std::optional<load_outcome>{};
  }
  if (!*snap) return std::optional<load_outcome>{};
  const snapshot_record& s = **snap;
  std::string why;
  try {
    if (s.version < 0) {
      why = "has a negative version";
    } else if (!h.snapshot.restore(s.state)) {
      why = "does not decode as the aggregate's state";
    }
  } catch (const std::exception& e) {
    why = fmt::format("was refused by restore(): {}", e.what());
  }
  if (!why.empty()) {
    h.reset();
    warn(o, fmt::format("the snapshot of stream '{}' at version {} {}; folding the whole stream",
                        stream_id, s.version, why));
    return std::optional<load_outcome>{};
  }
  // The tail is read from the snapshot's own version, which must be in the stream: a snapshot
  // beyond the stream's end (a store restored from an older backup) is ignored.
  // An apply() that throws on the snapshot's state (a balance a corrupt snapshot put near its
  // limit, say) means the snapshot does not fit its stream: fold the whole stream instead,
  // where the same exception, if it comes from the events themselves, reaches the caller.
  result<std::int64_t> last = std::int64_t{-1};
  try {
    last = fold_stream(store, stream_id, s.version, [&](const recorded_event& e) {
      return e.stream_version == s.version ? result<void>{} : h.apply(e);
    });
  } catch (const std::exception& e) {
    h.reset();
    warn(o, fmt::format("the events after the snapshot of stream '{}' at version {} do not "
                        "apply to it ({}); folding the whole stream",
                        stream_id, s.version, e.what()));
    return std::optional<load_outcome>{};
  }
  if (!last) return std::move(last).error();
  if (last.value() < s.version) {
    h.reset();
    warn(o, fmt::format("the snapshot of stream '{}' is at version {}, beyond the stream's last "
                        "event; folding the whole stream",
                        stream_id, s.version));
    return std::optional<load_outcome>{};
  }
  return std::optional<load_outcome>{load_outcome{last.value(), s.version, s.version}};
}

}  // namespace

std::string snapshot_key(const google::protobuf::Descriptor& state, std::string_view aggregate,
                         std::uint32_t fold_version) {
  // The state type's own closure (its name included), not its whole file: a sibling message
  // changing in the same .proto does not invalidate the snapshots.
  return fmt::format("{}:{}",
                     schema_fingerprint(fmt::format("{}\n{}", type_fingerprint(state), aggregate)),
                     fold_version);
}

result<load_outcome> load_state(event_store& store, std::string_view stream_id,
                                const load_options& o, const load_hooks& h) {
  // An invalid id is the caller's error, reported as such: not a snapshot warning first.
  if (auto v = validate_stream_id(stream_id); !v) return v.error();
  h.reset();  // a retried command loads again into the same state
  load_outcome out;
  bool from_scratch = true;
  if (h.snapshot.key && o.use_snapshots) {
    auto s = from_snapshot(store, stream_id, o, h);
    if (!s) return std::move(s).error();
    if (*s) {
      out = **s;
      from_scratch = false;
    }
  }
  if (from_scratch) {
    auto v = fold_stream(store, stream_id, 0, h.apply);
    if (!v) return std::move(v).error();
    out.version = v.value();
  }
  if (snapshot_due(o, h.snapshot, out.version, out)) {
    save_snapshot_now(store, stream_id, out.version, o, h.snapshot, out);
  }
  return out;
}

bool snapshot_due(const load_options& o, const snapshot_hooks& h, std::int64_t version,
                  const load_outcome& loaded) {
  return h.key && o.use_snapshots && h.every > 0 && version >= 0 &&
         version - loaded.snapshot_version >= h.every;
}

void save_snapshot_now(event_store& store, std::string_view stream_id, std::int64_t version,
                       const load_options& o, const snapshot_hooks& h, load_outcome& loaded) {
  if (!h.key) return;
  snapshot_record rec;
  rec.stream_id = std::string(stream_id);
  rec.key = *h.key;
  rec.version = version;
  std::string why;
  try {
    if (!h.save(rec.state)) why = "the state does not serialize";
  } catch (const std::exception& e) {
    why = fmt::format("save() threw: {}", e.what());
  }
  if (!why.empty()) {
    warn(o, fmt::format("no snapshot of stream '{}' at version {}: {}", stream_id, version, why));
    return;
  }
  store.save_snapshot(std::move(rec));
  loaded.snapshot_version = version;
}

}  // namespace annals::detail
