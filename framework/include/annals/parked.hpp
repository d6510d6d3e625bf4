// annals/parked.hpp: an event a consumer (projection or subscription) parked, the one type
// that projection_runner::parked(), subscription_admin::parked() and consumer_admin::parked()
// return. A plain value; copy freely.
//
// A consumer parks an event after its handler failed on it max_attempts times. A projection
// then stops at it ("stuck") until it is retried or skipped; a subscription moves past it and
// redelivers it when retried. Resolved events stay listed with their outcome.
#pragma once

#include <cstdint>
#include <string>

namespace annals {

struct parked_event {
  std::int64_t position = 0;        // the event's position in $all
  std::string stream_id;
  // -1: not recorded (a subscription's, parked before the consumer tables: SQLite format 4,
  // PostgreSQL format 3).
  std::int64_t stream_version = 0;
  std::string event_id;
  std::string type;
  std::string error;                // the handler's last error
  int attempts = 0;                 // deliveries tried before parking
  std::int64_t parked_at_us = 0;    // microseconds since the epoch
  // "parked", "retry" (a subscription's retry asked, not yet redelivered), "retried" or
  // "skipped".
  std::string state;
};

}  // namespace annals
