// annals/relay.hpp — publishing the event log to NATS JetStream ("the log is the outbox"),
// and a consumer helper for the other side. Library annals::annals_nats (nats.c, libnats).
//
// A relay is a catch-up subscription (annals/subscription.hpp) named "relay:<name>" whose
// batch handler publishes each event to JetStream and waits for the broker's acknowledgement.
// The subscription's checkpoint advances only over events the broker acknowledged, so:
//   - nothing is lost: a crash, a broker outage or a timeout republishes from the checkpoint;
//   - nothing is duplicated in the JetStream stream within its duplicate window: every message
//     carries Nats-Msg-Id = the event id, and the broker drops a second copy (default window
//     2 min: a relay must not stay down with published-but-unacknowledged events for longer);
//   - order: events are published in position order; the stream keeps that order (one relay
//     per subscription name holds the subscription's lease).
// Consumers still see a message more than once when they fail to ack it: key effects by event
// id (jetstream_consumer gives it).
//
// Subject: "<prefix>.<category>.<type>", category = the stream id up to its first '-' (the
// whole id when it has none), type = the full type name with '.' replaced by '_'. In each token
// a byte outside [A-Za-z0-9_-] is written "~XX" (two upper-case hex digits), so a stream id
// cannot inject '.', '*', '>' or white space; an empty token is "_".
//   account-42, bank.v1.MoneyDeposited  ->  annals.account.bank_v1_MoneyDeposited
// Headers (values with bytes outside '!'..'~', or '%', are percent-encoded):
//   Nats-Msg-Id            the event id
//   Annals-Type            the full type name
//   Annals-Position        global position (decimal)
//   Annals-Stream          stream id
//   Annals-Stream-Version  stream version (decimal)
//   Annals-Correlation-Id, Annals-Causation-Id
//   traceparent            W3C trace context
//   Annals-Recorded-At     UTC microseconds since the Unix epoch (decimal)
// A header whose value would be empty (no correlation id, no traceparent...) is left out.
// The message data is the event's payload bytes (serialized Protobuf), unchanged.
//
// Failures: a broker that is down, unreachable or slow (no ack within ack_timeout) is errc::io,
// which a started relay retries without limit (with backoff) while the connection reconnects
// forever (an explicit catch_up() gives up after max_attempts and returns it). A message the broker refuses for its content (larger than the server's
// max_payload, or than the stream's maximum message size) is errc::invalid_argument: the
// subscription retries it max_attempts times, then parks it (subscription_admin::retry()
// redelivers it once the limit is raised) and goes on.
#pragma once

#include <annals/subscription.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

struct relay_options {
  std::string nats_url = "nats://127.0.0.1:4222";  // one URL, or several comma-separated
  std::string stream = "ANNALS";    // the JetStream stream name. Default "ANNALS".
  std::string subject_prefix = "annals";  // first subject token(s). Default "annals".
  subscription_filter filter;       // which events are relayed. Default: all.
  std::int64_t batch_size = 500;    // events published, then awaited, per batch. Default 500.
  // Create the JetStream stream when it does not exist: subjects "<prefix>.>", file storage,
  // duplicate window below. An existing stream is used as it is. Default true; false: open()
  // fails with not_found when it is missing.
  bool create_stream = true;
  std::chrono::milliseconds duplicate_window{120000};  // of a created stream. Default 2 min.
  // How long to wait for the broker's acks of a batch before errc::io. Default 5 s.
  std::chrono::milliseconds ack_timeout{5000};
  // How long open() waits for the first connection. Default 2 s.
  std::chrono::milliseconds connect_timeout{2000};
  // Passed to the subscription (see subscription_options): deliveries of a refused message
  // before it is parked (default 5), lease (default 10 s), poll interval (default 20 ms),
  // start at the head when no checkpoint is stored (default false). Events are published as
  // the store reads them: through its upcasters, on a handle opened with some.
  int max_attempts = 5;
  std::chrono::milliseconds lease{10000};
  std::chrono::milliseconds poll_interval{20};
  bool start_at_end = false;
  // Called with a line of text on a failed delivery or a broker disconnect/reconnect.
  // Default: stderr.
  std::function<void(std::string_view)> log;
};

// A running relay. Thread safety: every member may be called from any thread. The relay owns
// its store connection and its NATS connection; destroying it stops it (waiting for the batch
// in flight) and closes both.
class relay {
 public:
  // Connects to NATS (errc::io naming the URL when unreachable), creates the JetStream stream
  // if asked and missing, and opens the subscription "relay:<name>" on the store (a handle, or
  // a path, sqlite:PATH or postgresql://...: annals/store_ref.hpp). Errors: the
  // subscription's (annals/subscription.hpp),
  // io (broker), not_found (no stream and create_stream false), invalid_argument (bad name,
  // prefix or stream name).
  static result<std::unique_ptr<relay>> open(store_ref store, std::string name,
                                             relay_options options = {});
  ~relay();
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;

  // Publishes everything up to the store's head at the call; returns the number of events
  // published (acknowledged by the broker). A broker outage is retried with backoff
  // max_attempts times, then returned as errc::io (the checkpoint stays before the event that
  // failed: call again later, nothing is lost). When another instance holds the lease it
  // returns at once with 0 events and the relay's subscription in report.held.
  result<catch_up_report> catch_up();
  // A background thread: catch_up(), then publish new appends as they come, until stop().
  // There, a broker outage is retried without limit.
  result<void> start();
  void stop();
  // Waits until everything up to `position` is published (or parked). timed_out at the deadline.
  result<void> wait_for(std::int64_t position, std::chrono::milliseconds timeout);
  // The subscription's status (checkpoint, lag, parked, last error).
  result<consumer_status> status();
  const std::string& subscription_name() const;  // "relay:<name>"

  // Messages acknowledged by the broker since open(), and how many of those the broker said
  // were duplicates (already stored: republished after a crash or a lost ack).
  std::int64_t acknowledged() const;
  std::int64_t duplicates() const;

 private:
  struct impl;
  explicit relay(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

// ---- the subject scheme (pure functions, no connection) ------------------------------------

// One subject token for `text`: bytes outside [A-Za-z0-9_-] as "~XX"; empty: "_".
std::string subject_token(std::string_view text);
// "<prefix>.<category token>.<type token>" for an event of `type` in `stream_id`.
std::string relay_subject(std::string_view prefix, std::string_view stream_id,
                          std::string_view type);
// The filter subject of a category's events: "<prefix>.<category token>.>".
std::string relay_category_filter(std::string_view prefix, std::string_view category);
// Header value encoding: bytes outside '!'..'~', and '%', as "%XX". decode reverses it (a
// malformed escape is kept as it is).
std::string header_value_encode(std::string_view value);
std::string header_value_decode(std::string_view value);

// ---- consuming ---------------------------------------------------------------------------

// A relayed event as a consumer receives it: the headers decoded. Fields whose header is
// missing (a message not published by a relay) are empty / 0.
struct relayed_message {
  std::string event_id;
  std::string type;
  std::int64_t position = 0;
  std::string stream_id;
  std::int64_t stream_version = -1;
  std::string correlation_id;
  std::string causation_id;
  std::string traceparent;
  std::int64_t recorded_at_us = 0;
  std::string subject;
  std::string payload;                 // the event's payload bytes
  std::uint64_t stream_sequence = 0;   // the message's sequence in the JetStream stream
  std::uint64_t deliveries = 1;        // 1 on the first delivery, 2 on the first redelivery...
};

struct jetstream_consumer_options {
  // How long the broker waits for an ack before redelivering. Default 30 s.
  std::chrono::milliseconds ack_wait{30000};
  // Deliveries of a message before the broker gives up on it; -1 (default): no limit.
  std::int64_t max_deliver = -1;
  // Redelivery delay asked for a message whose handler failed. Default 1 s.
  std::chrono::milliseconds nak_delay{1000};
  std::chrono::milliseconds connect_timeout{2000};  // default 2 s
};

// Called for one message; an error (or exception) naks it.
using relayed_message_handler = std::function<result<void>(const relayed_message&)>;
// Called for every message of a fetch; success acks them all, an error naks them all.
using relayed_batch_handler = std::function<result<void>(const std::vector<relayed_message>&)>;

// A durable JetStream pull consumer with explicit acks. Thread safety: one thread at a time.
// It owns its NATS connection (reconnecting forever). The durable consumer stays on the broker
// after destruction, with its acked position: the next open() with the same name resumes.
class jetstream_consumer {
 public:
  // Binds to (or creates) the durable consumer `durable_name` of `stream`, delivering the
  // messages on `filter_subject` (e.g. relay_category_filter("annals", "account")) from the
  // first one. Errors: io (broker unreachable), not_found (no such stream), invalid_argument
  // (a consumer of that name exists with another filter, or bad names).
  static result<std::unique_ptr<jetstream_consumer>> open(
      const std::string& nats_url, const std::string& stream, const std::string& durable_name,
      const std::string& filter_subject, jetstream_consumer_options options = {});
  ~jetstream_consumer();
  jetstream_consumer(const jetstream_consumer&) = delete;
  jetstream_consumer& operator=(const jetstream_consumer&) = delete;

  // Fetches up to max_messages (waiting at most `timeout` for the first ones) and calls the
  // handler for each in order, acking each after its handler succeeds. On the first failure
  // it naks that message and every later one of the fetch (redelivered after nak_delay; a
  // fetch meanwhile gets later messages first, so order is not kept across a failure) and
  // returns the handler's error. Returns the number of messages handled; 0
  // when none came in time. Errors: the handler's, io (broker unreachable or reconnecting).
  result<std::int64_t> poll(const relayed_message_handler& handler, int max_messages,
                            std::chrono::milliseconds timeout);
  // The same, with one call for the whole fetch (e.g. one database transaction).
  result<std::int64_t> poll_batch(const relayed_batch_handler& handler, int max_messages,
                                  std::chrono::milliseconds timeout);

 private:
  struct impl;
  explicit jetstream_consumer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

// ---- inspecting a stream -----------------------------------------------------------------

struct jetstream_stream_info {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
  std::uint64_t first_sequence = 0;
  std::uint64_t last_sequence = 0;
};
// The state of a JetStream stream. Errors: io (broker), not_found (no such stream).
result<jetstream_stream_info> read_jetstream_stream(const std::string& nats_url,
                                                    const std::string& stream);

}  // namespace annals
