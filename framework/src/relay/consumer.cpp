// jetstream_consumer: a durable pull consumer with explicit acks, decoding relayed events.
#include <annals/relay.hpp>

#include "relay/nats_common.hpp"

#include <fmt/format.h>

#include <charconv>
#include <exception>

namespace annals {

using namespace nats_detail;

namespace {

std::string header(natsMsg* m, const char* key) {
  const char* v = nullptr;
  if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v) return {};
  return header_value_decode(v);
}

std::int64_t header_int(natsMsg* m, const char* key, std::int64_t missing) {
  std::string v = header(m, key);
  std::int64_t out = missing;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size()) return missing;
  return out;
}

relayed_message decode(natsMsg* m) {
  relayed_message r;
  r.event_id = header(m, "Nats-Msg-Id");
  r.type = header(m, "Annals-Type");
  r.position = header_int(m, "Annals-Position", 0);
  r.stream_id = header(m, "Annals-Stream");
  r.stream_version = header_int(m, "Annals-Stream-Version", -1);
  r.correlation_id = header(m, "Annals-Correlation-Id");
  r.causation_id = header(m, "Annals-Causation-Id");
  r.traceparent = header(m, "traceparent");
  r.recorded_at_us = header_int(m, "Annals-Recorded-At", 0);
  r.subject = natsMsg_GetSubject(m);
  r.payload.assign(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) {
    r.stream_sequence = meta->Sequence.Stream;
    r.deliveries = meta->NumDelivered;
    jsMsgMetaData_Destroy(meta);
  }
  return r;
}

struct msg_list {
  natsMsgList list{};
  ~msg_list() { natsMsgList_Destroy(&list); }
};

}  // namespace

struct jetstream_consumer::impl {
  jetstream_consumer_options opts;
  std::string stream;
  conn_ptr nc;
  js_ptr js;
  sub_ptr sub;

  // Fetches; 0 messages when none came in time.
  result<void> fetch(msg_list& out, int max_messages, std::chrono::milliseconds timeout) {
    if (max_messages < 1) {
      return error(errc::invalid_argument, "poll: max_messages must be at least 1");
    }
    jsErrCode ec = static_cast<jsErrCode>(0);
    natsStatus s = natsSubscription_Fetch(&out.list, sub.get(), max_messages,
                                          std::max<std::int64_t>(timeout.count(), 1), &ec);
    if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND) {
      // Nothing came: an empty stream, or a broker that went away (then say so).
      if (natsConnection_Status(nc.get()) != NATS_CONN_STATUS_CONNECTED) {
        return error(errc::io, fmt::format("NATS: not connected to the broker of stream '{}' "
                                           "(reconnecting)",
                                           stream));
      }
      return {};
    }
    if (s != NATS_OK) {
      return nats_error(s, fmt::format("fetching from JetStream stream '{}'", stream));
    }
    return {};
  }

  void nak_from(msg_list& l, int from) {
    for (int i = from; i < l.list.Count; ++i) {
      (void)natsMsg_NakWithDelay(l.list.Msgs[i], opts.nak_delay.count(), nullptr);
    }
  }

  result<void> flush() {
    if (natsStatus s = natsConnection_FlushTimeout(nc.get(), 5000); s != NATS_OK) {
      return nats_error(s, "sending acknowledgements");
    }
    return {};
  }
};

jetstream_consumer::jetstream_consumer(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
jetstream_consumer::~jetstream_consumer() = default;

result<std::unique_ptr<jetstream_consumer>> jetstream_consumer::open(
    const std::string& nats_url, const std::string& stream, const std::string& durable_name,
    const std::string& filter_subject, jetstream_consumer_options options) {
  if (auto r = check_js_name(stream, "JetStream stream name"); !r) return r.error();
  if (auto r = check_js_name(durable_name, "durable consumer name"); !r) return r.error();
  if (filter_subject.empty()) {
    return error(errc::invalid_argument, "the consumer's filter subject is empty");
  }
  auto p = std::make_unique<impl>();
  p->opts = options;
  p->stream = stream;
  auto nc = connect(nats_url, options.connect_timeout, nullptr);
  if (!nc) return nc.error();
  p->nc = std::move(*nc);
  jsCtx* js = nullptr;
  if (natsStatus s = natsConnection_JetStream(&js, p->nc.get(), nullptr); s != NATS_OK) {
    return nats_error(s, "JetStream context");
  }
  p->js.reset(js);

  jsStreamInfo* si = nullptr;
  jsErrCode ec = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &ec);
  if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr) {
    return error(errc::not_found,
                 fmt::format("NATS: there is no JetStream stream '{}' (start a relay first)",
                             stream));
  }
  if (s != NATS_OK) return nats_error(s, fmt::format("reading JetStream stream '{}'", stream));
  jsStreamInfo_Destroy(si);

  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.Durable = durable_name.c_str();
  so.Config.AckPolicy = js_AckExplicit;
  so.Config.DeliverPolicy = js_DeliverAll;
  so.Config.AckWait = static_cast<int64_t>(options.ack_wait.count()) * 1000000;
  so.Config.MaxDeliver = options.max_deliver;
  natsSubscription* sub = nullptr;
  ec = static_cast<jsErrCode>(0);
  s = js_PullSubscribe(&sub, js, filter_subject.c_str(), durable_name.c_str(), nullptr, &so, &ec);
  if (s != NATS_OK) {
    // A JetStream API error (e.g. an existing consumer with another filter) is the caller's.
    return nats_error(s,
                      fmt::format("creating or binding durable consumer '{}' on '{}' for '{}'",
                                  durable_name, stream, filter_subject),
                      ec != 0 || s == NATS_ERR ? errc::invalid_argument : errc::io);
  }
  p->sub.reset(sub);
  return std::unique_ptr<jetstream_consumer>(new jetstream_consumer(std::move(p)));
}

result<std::int64_t> jetstream_consumer::poll(const relayed_message_handler& handler,
                                              int max_messages,
                                              std::chrono::milliseconds timeout) {
  msg_list l;
  if (auto r = impl_->fetch(l, max_messages, timeout); !r) return r.error();
  std::int64_t done = 0;
  for (int i = 0; i < l.list.Count; ++i) {
    natsMsg* m = l.list.Msgs[i];
    result<void> r = [&]() -> result<void> {
      try {
        return handler(decode(m));
      } catch (const std::exception& ex) {
        return error(errc::handler_failed,
                     fmt::format("the handler threw an exception: {}", ex.what()));
      } catch (...) {
        return error(errc::handler_failed, "the handler threw an unknown exception");
      }
    }();
    if (!r) {
      impl_->nak_from(l, i);
      (void)impl_->flush();
      return r.error();
    }
    (void)natsMsg_Ack(m, nullptr);
    ++done;
  }
  if (l.list.Count > 0) {
    if (auto r = impl_->flush(); !r) return r.error();
  }
  return done;
}

result<std::int64_t> jetstream_consumer::poll_batch(const relayed_batch_handler& handler,
                                                    int max_messages,
                                                    std::chrono::milliseconds timeout) {
  msg_list l;
  if (auto r = impl_->fetch(l, max_messages, timeout); !r) return r.error();
  if (l.list.Count == 0) return std::int64_t{0};
  std::vector<relayed_message> batch;
  batch.reserve(static_cast<std::size_t>(l.list.Count));
  for (int i = 0; i < l.list.Count; ++i) batch.push_back(decode(l.list.Msgs[i]));
  result<void> r = [&]() -> result<void> {
    try {
      return handler(batch);
    } catch (const std::exception& ex) {
      return error(errc::handler_failed,
                   fmt::format("the handler threw an exception: {}", ex.what()));
    } catch (...) {
      return error(errc::handler_failed, "the handler threw an unknown exception");
    }
  }();
  if (!r) {
    impl_->nak_from(l, 0);
    (void)impl_->flush();
    return r.error();
  }
  for (int i = 0; i < l.list.Count; ++i) (void)natsMsg_Ack(l.list.Msgs[i], nullptr);
  if (auto f = impl_->flush(); !f) return f.error();
  return static_cast<std::int64_t>(l.list.Count);
}

}  // namespace annals
