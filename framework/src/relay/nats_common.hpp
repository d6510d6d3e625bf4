// Internal: nats.c connections, JetStream contexts and errors for the relay and the consumer.
#pragma once

#include <annals/result.hpp>

#include <nats/nats.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace annals::nats_detail {

struct conn_deleter {
  void operator()(natsConnection* c) const noexcept {
    if (c) {
      natsConnection_Close(c);
      natsConnection_Destroy(c);
    }
  }
};
struct js_deleter {
  void operator()(jsCtx* js) const noexcept { jsCtx_Destroy(js); }
};
struct sub_deleter {
  void operator()(natsSubscription* s) const noexcept { natsSubscription_Destroy(s); }
};
using conn_ptr = std::unique_ptr<natsConnection, conn_deleter>;
using js_ptr = std::unique_ptr<jsCtx, js_deleter>;
using sub_ptr = std::unique_ptr<natsSubscription, sub_deleter>;

// "NATS: <what>: <status text>[ (<last error>)]" as errc::io (or `kind`).
error nats_error(natsStatus s, std::string_view what, errc kind = errc::io);

// Connects to `url` (reconnecting forever once connected, every 250 ms). `log` (may be empty)
// hears disconnects and reconnects; it must outlive the connection.
result<conn_ptr> connect(const std::string& url, std::chrono::milliseconds timeout,
                         const std::function<void(std::string_view)>* log);

// Checks a JetStream stream name or durable name: 1..255 bytes, no '.', '*', '>', white
// space or control bytes.
result<void> check_js_name(std::string_view name, std::string_view what);

}  // namespace annals::nats_detail
