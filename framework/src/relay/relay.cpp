// The relay: a batch subscription whose handler publishes to JetStream and waits for the acks.
#include <annals/relay.hpp>

#include <annals/fault.hpp>

#include "relay/nats_common.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace annals {

using namespace nats_detail;

namespace {

// Subject prefixes: one or more tokens separated by '.', none empty, no wildcards or spaces.
result<void> check_prefix(std::string_view prefix) {
  if (prefix.empty() || prefix.size() > 200) {
    return error(errc::invalid_argument, "the subject prefix must be 1 to 200 bytes");
  }
  if (prefix.front() == '.' || prefix.back() == '.' ||
      prefix.find("..") != std::string_view::npos) {
    return error(errc::invalid_argument,
                 fmt::format("the subject prefix '{}' has an empty token", prefix));
  }
  for (unsigned char c : prefix) {
    if (c <= 0x20 || c >= 0x7f || c == '*' || c == '>') {
      return error(errc::invalid_argument,
                   fmt::format("the subject prefix '{}' contains a wildcard, white space or a "
                               "byte outside printable ASCII",
                               prefix));
    }
  }
  return {};
}

enum class ack_state { pending, ok, failed };

struct pending_ack {
  ack_state state = ack_state::pending;
  natsStatus status = NATS_OK;
  jsErrCode code = static_cast<jsErrCode>(0);
  std::string text;
};

// Bytes the message takes in the broker's max_payload accounting (headers + data).
std::size_t message_bytes(natsMsg* m, std::size_t payload) {
  const char** keys = nullptr;
  int count = 0;
  std::size_t n = 12;  // "NATS/1.0\r\n" ... "\r\n"
  if (natsMsgHeader_Keys(m, &keys, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) {
      const char* v = nullptr;
      n += std::strlen(keys[i]) + 4;
      if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK && v) n += std::strlen(v);
    }
    std::free(keys);
  }
  return n + payload;
}

}  // namespace

struct relay::impl {
  relay_options opts;
  std::string sub_name;
  std::function<void(std::string_view)> log;
  conn_ptr nc;
  js_ptr js;
  std::atomic<std::int64_t> acked{0};
  std::atomic<std::int64_t> dups{0};

  // The batch in flight (one at a time: the subscription calls the handler from one thread).
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::string, std::size_t> index;  // event id -> batch index
  std::vector<pending_ack> acks;
  std::size_t outstanding = 0;

  std::unique_ptr<subscription> sub;  // last: destroyed (stopped) first

  // The subscription stops first (no more batches), then the connection closes (no more ack
  // callbacks) while the batch state they touch still exists.
  ~impl() {
    sub.reset();
    js.reset();
    nc.reset();
  }

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<impl*>(closure);
    const char* id = nullptr;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id) {
      std::lock_guard lock(self->mu);
      auto it = self->index.find(id);
      if (it != self->index.end() && self->acks[it->second].state == ack_state::pending) {
        auto& a = self->acks[it->second];
        if (pa) {
          a.state = ack_state::ok;
          if (pa->Duplicate) self->dups.fetch_add(1, std::memory_order_relaxed);
        } else {
          a.state = ack_state::failed;
          a.status = pae ? pae->Err : NATS_ERR;
          a.code = pae ? pae->ErrCode : static_cast<jsErrCode>(0);
          a.text = pae && pae->ErrText ? pae->ErrText : "";
        }
        if (self->outstanding > 0) --self->outstanding;
        self->cv.notify_all();
      }
    }
    natsMsg_Destroy(msg);
  }

  error ack_error(const recorded_event& e, const pending_ack& a) {
    std::string what = a.text.empty() ? natsStatus_GetText(a.status) : a.text;
    // JetStream answered with an API error: it refused this message (too large, a limit of
    // the stream, permissions...). Parked after max_attempts, unless the error is about the
    // server's state (storage failing or full for now): then it is "try again".
    if (a.code != 0 && a.code != JSInsufficientResourcesErr && a.code != JSStreamStoreFailedErr) {
      return error(errc::invalid_argument,
                   fmt::format("JetStream stream '{}' refused the event at position {} ({} "
                               "bytes): {} (error code {})",
                               opts.stream, e.position, e.payload.size(), what,
                               static_cast<int>(a.code)));
    }
    return error(errc::io, fmt::format("NATS: publishing the event at position {} to '{}': {}",
                                       e.position, opts.stream, what));
  }

  result<natsMsg*> make_message(const recorded_event& e) {
    std::string subject = relay_subject(opts.subject_prefix, e.stream_id, e.type);
    natsMsg* m = nullptr;
    natsStatus s = natsMsg_Create(&m, subject.c_str(), nullptr, e.payload.data(),
                                  static_cast<int>(e.payload.size()));
    // Empty values are left out: nats.c 3.4 writes "Key: \r\n" for one, and the server then
    // reads the next line as its value (the header after it is lost).
    auto set = [&](const char* key, const std::string& value) {
      if (s == NATS_OK && !value.empty()) {
        s = natsMsgHeader_Set(m, key, header_value_encode(value).c_str());
      }
    };
    set("Nats-Msg-Id", e.event_id);
    set("Annals-Type", e.type);
    set("Annals-Position", std::to_string(e.position));
    set("Annals-Stream", e.stream_id);
    set("Annals-Stream-Version", std::to_string(e.stream_version));
    set("Annals-Correlation-Id", e.metadata.correlation_id);
    set("Annals-Causation-Id", e.metadata.causation_id);
    set("traceparent", e.metadata.traceparent);
    set("Annals-Recorded-At", std::to_string(e.recorded_at_us));
    if (s != NATS_OK) {
      natsMsg_Destroy(m);
      return nats_error(s, fmt::format("building the message of position {}", e.position));
    }
    return m;
  }

  // Takes the unacknowledged messages back: late acks for them are then dropped, and the next
  // attempt republishes them (the broker drops copies it already has).
  void drop_pending() {
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js.get()) == NATS_OK) {
      natsMsgList_Destroy(&pending);
    }
    std::lock_guard lock(mu);
    index.clear();
  }

  result<void> publish(const std::vector<recorded_event>& batch, std::size_t& handled) {
    handled = 0;
    {
      std::lock_guard lock(mu);
      index.clear();
      acks.assign(batch.size(), pending_ack{});
      outstanding = 0;
      for (std::size_t i = 0; i < batch.size(); ++i) index.emplace(batch[i].event_id, i);
    }
    // While reconnecting, publishes would only be buffered, and the server's max_payload
    // known here may be stale (it may have been raised): wait for the connection.
    if (natsConnection_Status(nc.get()) != NATS_CONN_STATUS_CONNECTED) {
      return error(errc::io, fmt::format("NATS: not connected to {} (reconnecting)",
                                         opts.nats_url));
    }
    const std::int64_t max_payload = natsConnection_GetMaxPayload(nc.get());
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = opts.ack_timeout.count();
    std::optional<error> send_error;
    std::size_t sent = 0;
    for (const auto& e : batch) {
      auto m = make_message(e);
      if (!m) {
        send_error = m.error();
        break;
      }
      natsMsg* msg = *m;
      std::size_t bytes = message_bytes(msg, e.payload.size());
      if (max_payload > 0 && bytes > static_cast<std::size_t>(max_payload)) {
        natsMsg_Destroy(msg);
        send_error = error(errc::invalid_argument,
                           fmt::format("the event at position {} ({} bytes with its headers) is "
                                       "larger than the NATS server's max_payload ({} bytes)",
                                       e.position, bytes, max_payload));
        break;
      }
      {
        std::lock_guard lock(mu);
        ++outstanding;
      }
      natsStatus s = js_PublishMsgAsync(js.get(), &msg, &po);
      natsMsg_Destroy(msg);  // no-op when the library took it
      if (s != NATS_OK) {
        {
          std::lock_guard lock(mu);
          --outstanding;
        }
        send_error = s == NATS_MAX_PAYLOAD
                         ? nats_error(s,
                                      fmt::format("the event at position {} is larger than the "
                                                  "server's max_payload ({} bytes)",
                                                  e.position, max_payload),
                                      errc::invalid_argument)
                         : nats_error(s, fmt::format("publishing the event at position {}",
                                                     e.position));
        break;
      }
      ++sent;
    }
    // Published, acks not awaited yet: a crash here leaves the broker with messages the
    // checkpoint does not cover (the next relay publishes them again; the broker drops them).
    if (auto f = fault::point(fault::relay_before_ack); !f) {
      drop_pending();
      return f.error();
    }
    // Wait for every ack of what was sent (each publish times out after ack_timeout).
    {
      std::unique_lock lock(mu);
      auto deadline = std::chrono::steady_clock::now() + opts.ack_timeout +
                      std::chrono::milliseconds(1000);
      cv.wait_until(lock, deadline, [&] { return outstanding == 0; });
    }
    bool timed_out = false;
    {
      std::lock_guard lock(mu);
      timed_out = outstanding != 0;
    }
    if (timed_out) drop_pending();
    std::lock_guard lock(mu);
    while (handled < sent && acks[handled].state == ack_state::ok) ++handled;
    acked.fetch_add(static_cast<std::int64_t>(std::count_if(
                        acks.begin(), acks.end(),
                        [](const pending_ack& a) { return a.state == ack_state::ok; })),
                    std::memory_order_relaxed);
    index.clear();
    if (handled == batch.size()) {
      // Every ack in, the checkpoint not moved yet (the subscription moves it on return). A
      // failure here counts nothing as handled: the batch is published again, as duplicates.
      auto f = fault::point(fault::relay_after_ack);
      if (!f) handled = 0;
      return f;
    }
    if (handled < sent) {
      const auto& a = acks[handled];
      if (a.state == ack_state::pending) {
        return error(errc::io,
                     fmt::format("NATS: no acknowledgement from JetStream for the event at "
                                 "position {} within {} ms (is the broker up?)",
                                 batch[handled].position, opts.ack_timeout.count()));
      }
      return ack_error(batch[handled], a);
    }
    return *send_error;
  }

  result<void> ensure_stream() {
    jsStreamInfo* si = nullptr;
    jsErrCode ec = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&si, js.get(), opts.stream.c_str(), nullptr, &ec);
    if (s == NATS_OK) {
      // An existing stream must take the relay's subjects, or every publish would wait for
      // an answer that never comes ("no responders"), retried forever as an outage.
      bool covered = false;
      std::string listed;
      for (int i = 0; si->Config && i < si->Config->SubjectsLen; ++i) {
        std::string_view subject = si->Config->Subjects[i];
        listed += (i ? ", " : "") + std::string(subject);
        if (subject == ">") covered = true;
        if (subject.size() >= 2 && subject.substr(subject.size() - 2) == ".>") {
          std::string_view stem = subject.substr(0, subject.size() - 1);  // "annals."
          std::string mine = opts.subject_prefix + ".";
          if (mine.compare(0, stem.size(), stem) == 0) covered = true;
        }
      }
      jsStreamInfo_Destroy(si);
      if (!covered) {
        return error(errc::invalid_argument,
                     fmt::format("NATS: the JetStream stream '{}' takes the subjects [{}], not "
                                 "'{}.>': use another stream name or subject prefix",
                                 opts.stream, listed, opts.subject_prefix));
      }
      return {};
    }
    if (s != NATS_NOT_FOUND && ec != JSStreamNotFoundErr) {
      return nats_error(s, fmt::format("reading JetStream stream '{}' (is JetStream enabled "
                                       "on the server?)",
                                       opts.stream));
    }
    if (!opts.create_stream) {
      return error(errc::not_found,
                   fmt::format("NATS: there is no JetStream stream '{}'", opts.stream));
    }
    std::string subjects = opts.subject_prefix + ".>";
    const char* subject_list[] = {subjects.c_str()};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = opts.stream.c_str();
    cfg.Subjects = subject_list;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = static_cast<int64_t>(opts.duplicate_window.count()) * 1000000;
    ec = static_cast<jsErrCode>(0);
    s = js_AddStream(&si, js.get(), &cfg, nullptr, &ec);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(si);
      return {};
    }
    if (ec == JSStreamNameExistErr) return {};  // created meanwhile by another relay
    return nats_error(s, fmt::format("creating JetStream stream '{}' for subjects '{}'",
                                     opts.stream, subjects));
  }
};

relay::relay(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
relay::~relay() = default;

result<std::unique_ptr<relay>> relay::open(store_ref store, std::string name,
                                           relay_options options) {
  if (auto r = check_prefix(options.subject_prefix); !r) return r.error();
  if (auto r = check_js_name(options.stream, "JetStream stream name"); !r) return r.error();
  if (options.batch_size < 1 || options.batch_size > 100000) {
    return error(errc::invalid_argument, "the relay's batch size must be 1 to 100000");
  }
  if (options.ack_timeout.count() < 1) {
    return error(errc::invalid_argument, "the relay's ack timeout must be positive");
  }
  auto p = std::make_unique<impl>();
  p->opts = std::move(options);
  p->sub_name = "relay:" + name;
  p->log = p->opts.log;
  if (!p->log) {
    p->log = [who = p->sub_name](std::string_view line) {
      fmt::print(stderr, "{}: {}\n", who, line);
    };
  }
  auto nc = connect(p->opts.nats_url, p->opts.connect_timeout, &p->log);
  if (!nc) return nc.error();
  p->nc = std::move(*nc);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = std::max<int64_t>(p->opts.ack_timeout.count(), 1000);
  jo.PublishAsync.AckHandler = &impl::on_ack;
  jo.PublishAsync.AckHandlerClosure = p.get();
  jo.PublishAsync.MaxPending = std::max<int64_t>(p->opts.batch_size, 256);
  jsCtx* js = nullptr;
  if (natsStatus s = natsConnection_JetStream(&js, p->nc.get(), &jo); s != NATS_OK) {
    return nats_error(s, "JetStream context");
  }
  p->js.reset(js);
  if (auto r = p->ensure_stream(); !r) return r.error();

  subscription_options so;
  so.filter = p->opts.filter;
  so.batch_size = p->opts.batch_size;
  so.max_attempts = p->opts.max_attempts;
  so.lease = p->opts.lease;
  so.poll_interval = p->opts.poll_interval;
  so.start_at_end = p->opts.start_at_end;
  so.log = p->log;
  impl* self = p.get();
  auto sub = subscription::open(
      std::move(store), p->sub_name,
      subscription_batch_handler(
          [self](const std::vector<recorded_event>& batch, std::size_t& handled) {
            return self->publish(batch, handled);
          }),
      std::move(so));
  if (!sub) return sub.error();
  p->sub = std::move(*sub);
  return std::unique_ptr<relay>(new relay(std::move(p)));
}

result<catch_up_report> relay::catch_up() { return impl_->sub->catch_up(); }
result<void> relay::start() { return impl_->sub->start(); }
void relay::stop() { impl_->sub->stop(); }
result<void> relay::wait_for(std::int64_t position, std::chrono::milliseconds timeout) {
  return impl_->sub->wait_for(position, timeout);
}
result<consumer_status> relay::status() { return impl_->sub->status(); }
const std::string& relay::subscription_name() const { return impl_->sub_name; }
std::int64_t relay::acknowledged() const { return impl_->acked.load(); }
std::int64_t relay::duplicates() const { return impl_->dups.load(); }

// ---- stream info ---------------------------------------------------------------------------

result<jetstream_stream_info> read_jetstream_stream(const std::string& nats_url,
                                                    const std::string& stream) {
  if (auto r = check_js_name(stream, "JetStream stream name"); !r) return r.error();
  auto nc = connect(nats_url, std::chrono::milliseconds(2000), nullptr);
  if (!nc) return nc.error();
  jsCtx* js = nullptr;
  if (natsStatus s = natsConnection_JetStream(&js, nc->get(), nullptr); s != NATS_OK) {
    return nats_error(s, "JetStream context");
  }
  js_ptr jsp(js);
  jsStreamInfo* si = nullptr;
  jsErrCode ec = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &ec);
  if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr) {
    return error(errc::not_found, fmt::format("NATS: there is no JetStream stream '{}'", stream));
  }
  if (s != NATS_OK) return nats_error(s, fmt::format("reading JetStream stream '{}'", stream));
  jetstream_stream_info out;
  out.messages = si->State.Msgs;
  out.bytes = si->State.Bytes;
  out.first_sequence = si->State.FirstSeq;
  out.last_sequence = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  return out;
}

}  // namespace annals
