// annals/result.hpp — the one result type of every store and command call.
//
// Expected outcomes (a conflict, a rejected command, a missing stream) are values, not
// exceptions. A result is [[nodiscard]]: ignoring one is a compiler warning.
//
// Thread safety: plain values; distinct objects may be used from distinct threads.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace annals {

// Named kinds of failure. The CLIs map them to exit codes with exit_code().
enum class errc {
  concurrency_conflict,  // expected version did not match the stream (after retries, for commands)
  rejected,              // a domain rule refused the command
  not_found,             // the stream or thing asked for does not exist
  invalid_argument,      // bad input from the caller; nothing was written
  corruption,            // the store file is damaged or is not an Annals store
  busy,                  // a lock another process or runner holds stayed held past the timeout
  io,                    // the operating system or the database failed to read or write
  timed_out,             // a wait (wait_for) reached its deadline; the thing waited for is fine
  stuck,                 // a projection is held at a parked event: retry or skip it first
  read_only,             // a write was asked of a store or admin opened read-only (or on a
                         // read-only file); nothing was written
  handler_failed,        // user code called by the framework (a projection or subscription
                         // handler) threw an exception; the message carries what()
};

// "concurrency_conflict", "rejected", ...
std::string_view to_string(errc kind) noexcept;

// CLI exit codes: 0 ok, 1 rejected / not found, 2 usage or bad input,
// 3 conflict after retries, 4 storage error (corruption, busy, io, read_only) or a consumer
// that cannot go on (timed_out, stuck, handler_failed).
int exit_code(errc kind) noexcept;

// Details of a concurrency conflict. Versions are 0-based; -1 means "no stream".
struct conflict_details {
  std::string stream_id;
  std::string expected;    // as written: "any", "no_stream", "stream_exists" or a number
  std::int64_t actual = -1;  // the stream's current version when the append was checked
};

class error {
 public:
  error(errc kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  error(conflict_details details, std::string message)
      : kind_(errc::concurrency_conflict),
        message_(std::move(message)),
        conflict_(std::move(details)) {}

  errc kind() const noexcept { return kind_; }
  // A sentence for a person: names the stream, versions or limit involved. Never SQL.
  const std::string& message() const noexcept { return message_; }
  // Set only for kind() == errc::concurrency_conflict raised by an append.
  const std::optional<conflict_details>& conflict() const noexcept { return conflict_; }

 private:
  errc kind_;
  std::string message_;
  std::optional<conflict_details> conflict_;
};

// Thrown only by result::value_or_throw(), for callers who prefer exceptions.
class error_exception : public std::runtime_error {
 public:
  explicit error_exception(annals::error e)
      : std::runtime_error(e.message()), error_(std::move(e)) {}
  const annals::error& error() const noexcept { return error_; }

 private:
  annals::error error_;
};

// Either a T or an error. value() on an error (or error() on a value) is a programming
// mistake and throws std::logic_error rather than being undefined.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  result(annals::error e) : v_(std::in_place_index<1>, std::move(e)) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return check_value(), std::get<0>(v_); }
  const T& value() const& { return check_value(), std::get<0>(v_); }
  // By value, so `for (auto& x : f().value())` does not dangle.
  T value() && { return check_value(), std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const annals::error& error() const& {
    if (ok()) throw std::logic_error("annals::result::error() called on a success");
    return std::get<1>(v_);
  }
  annals::error&& error() && {
    if (ok()) throw std::logic_error("annals::result::error() called on a success");
    return std::get<1>(std::move(v_));
  }

  // The value, or throws error_exception carrying the error.
  T value_or_throw() && {
    if (!ok()) throw error_exception(std::get<1>(std::move(v_)));
    return std::get<0>(std::move(v_));
  }

 private:
  void check_value() const {
    if (!ok()) throw std::logic_error("annals::result::value() called on an error: " +
                                      std::get<1>(v_).message());
  }
  std::variant<T, annals::error> v_;
};

// A result carrying no value.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(annals::error e) : e_(std::move(e)) {}

  bool ok() const noexcept { return !e_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }

  const annals::error& error() const& {
    if (ok()) throw std::logic_error("annals::result::error() called on a success");
    return *e_;
  }
  void value_or_throw() && {
    if (!ok()) throw error_exception(std::move(*e_));
  }

 private:
  std::optional<annals::error> e_;
};

}  // namespace annals
