#include "relay/nats_common.hpp"

#include <fmt/format.h>

namespace annals::nats_detail {

error nats_error(natsStatus s, std::string_view what, errc kind) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last && *last && text.find(last) == std::string::npos && std::string_view(last) != text) {
    text += fmt::format(" ({})", last);
  }
  return error(kind, fmt::format("NATS: {}: {}", what, text));
}

namespace {

void on_disconnected(natsConnection* nc, void* closure) {
  if (natsConnection_IsClosed(nc)) return;  // closed by its owner, not lost
  auto* log = static_cast<const std::function<void(std::string_view)>*>(closure);
  if (log && *log) (*log)("NATS: disconnected from the broker; reconnecting");
}
void on_reconnected(natsConnection*, void* closure) {
  auto* log = static_cast<const std::function<void(std::string_view)>*>(closure);
  if (log && *log) (*log)("NATS: reconnected to the broker");
}

}  // namespace

result<conn_ptr> connect(const std::string& url, std::chrono::milliseconds timeout,
                         const std::function<void(std::string_view)>* log) {
  natsOptions* raw = nullptr;
  if (natsStatus s = natsOptions_Create(&raw); s != NATS_OK) return nats_error(s, "options");
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> opts(raw, natsOptions_Destroy);
  natsStatus s = natsOptions_SetURL(raw, url.c_str());
  if (s != NATS_OK) {
    return nats_error(s, fmt::format("bad URL '{}'", url), errc::invalid_argument);
  }
  s = natsOptions_SetTimeout(raw, static_cast<int64_t>(timeout.count()));
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(raw, -1);  // forever
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(raw, 250);
  if (s == NATS_OK) s = natsOptions_SetReconnectJitter(raw, 50, 50);
  // A dead TCP connection (a broker killed without a FIN) is noticed within ~4 s.
  if (s == NATS_OK) s = natsOptions_SetPingInterval(raw, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(raw, 2);
  if (s == NATS_OK && log) {
    s = natsOptions_SetDisconnectedCB(raw, on_disconnected, const_cast<void*>(
                                          static_cast<const void*>(log)));
    if (s == NATS_OK) {
      s = natsOptions_SetReconnectedCB(raw, on_reconnected, const_cast<void*>(
                                           static_cast<const void*>(log)));
    }
  }
  if (s != NATS_OK) return nats_error(s, "options");
  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, raw);
  if (s != NATS_OK) {
    return nats_error(s, fmt::format("cannot connect to {}", url));
  }
  return conn_ptr(nc);
}

result<void> check_js_name(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > 255) {
    return error(errc::invalid_argument, fmt::format("the {} must be 1 to 255 bytes", what));
  }
  for (unsigned char c : name) {
    if (c <= 0x20 || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\') {
      return error(errc::invalid_argument,
                   fmt::format("the {} '{}' contains '.', '*', '>', '/', '\\', white space or a "
                               "control character",
                               what, name));
    }
  }
  return {};
}

}  // namespace annals::nats_detail
