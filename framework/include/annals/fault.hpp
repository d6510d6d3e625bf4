// annals/fault.hpp — fault injection at named points, for crash and failure tests.
//
// Code calls `point("name")` where a crash or an I/O failure would hurt most (before and after
// a commit, between a write and its checkpoint). Nothing is armed by default, and then a point
// is free: one relaxed atomic load, no lock, no allocation. Armed for its name, a point either
// kills the process with SIGKILL (a real `kill -9`: no destructor, no flush, no atexit) or
// returns `errc::io`, as a failing disk or network would.
//
// Arming: `arm(spec)` in-process, or the environment variable ANNALS_FAULTS (the same spec),
// read once by every process that links the framework, at start-up (or at the first call
// here if that comes first). So any binary — `bank`, `annals`, your application — can be
// crash-tested without a code change. A bad ANNALS_FAULTS is reported on stderr and the process exits with
// `bad_spec_exit_code` (78) instead of running without the faults it was asked for.
//
// Spec: a comma-separated list of NAME=ACTION[@N][%P]
//   ACTION  crash | fail_io
//   @N      fire on the N-th hit of that point only (1-based; hits counted per process)
//   %P      fire on each hit with probability P, 0 < P <= 1 (with @N: on the N-th hit, with
//           probability P); seeded from ANNALS_FAULT_SEED if set, else at random
//   neither fire on every hit
// e.g. ANNALS_FAULTS="store.append.after_commit=crash@3,projection.after_write=fail_io%0.1"
// Several rules may name one point: the first that fires wins.
//
// Thread safety: every function may be called from any thread. Hit counters are per point and
// process-wide (all threads count together); a point that is not armed is not counted.
// A forked child inherits its parent's rules and counters.
#pragma once

#include <annals/result.hpp>

#include <string_view>
#include <vector>

namespace annals::fault {

// The framework's own points. Your code may add its own names ("myapp.after_email").
// Before the append's COMMIT (SQLite: once per group commit, shared by the appends in it).
inline constexpr std::string_view store_append_before_commit = "store.append.before_commit";
// After the COMMIT succeeded, before any appender is told: the outcome is unknown to the
// caller, the events are stored (retry with the same event ids: `already_appended`).
inline constexpr std::string_view store_append_after_commit = "store.append.after_commit";
// In a projection runner's batch: after the handlers wrote the read model, before the
// checkpoint is written. Both are in one transaction, so the point is inside it, before COMMIT.
inline constexpr std::string_view projection_after_write = "projection.after_write";
// In a rebuild's last transaction: shadow tables built and caught up, before they replace the
// live tables (not reached by a --verify rebuild, which swaps nothing).
inline constexpr std::string_view rebuild_before_swap = "rebuild.before_swap";
// In the relay, per batch: published to JetStream, before the broker's acks are awaited.
inline constexpr std::string_view relay_before_ack = "relay.before_ack";
// In the relay, per batch: every ack received, before the checkpoint moves.
inline constexpr std::string_view relay_after_ack = "relay.after_ack";

// Exit code of a process whose ANNALS_FAULTS does not parse (sysexits' EX_CONFIG).
inline constexpr int bad_spec_exit_code = 78;

// Called by code at a named point. Not armed for `name`: returns ok. Armed and firing:
// `crash` sends SIGKILL to this process (never returns); `fail_io` returns
// error(errc::io, "injected fault at <name>").
result<void> point(std::string_view name);

// Adds the rules of `spec` to those armed (the hit counts of points already armed go on).
// A bad spec arms nothing and returns errc::invalid_argument naming the bad part.
result<void> arm(std::string_view spec);

// Removes every rule and resets every hit counter. Points are free again.
void disarm_all();

// The framework's built-in point names (the constants above), for tools and tests.
std::vector<std::string_view> known_points();

// Adds a point of your program to known_points() (after the framework's, in the order
// registered; a name registered twice is listed once). Points need no registration to work:
// this is for the listings (docs, a tool printing the points that can be armed).
void register_point(std::string_view name);

}  // namespace annals::fault
