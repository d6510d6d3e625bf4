// relay: throughput of annals::relay (catch_up over N pre-appended bank deposits, published
// to JetStream and acknowledged) beside a raw nats.c baseline that publishes the same messages
// (same subjects, headers and payloads) with js_PublishMsgAsync in batches of the same size,
// waiting for every ack of a batch before the next, as the relay does; each rep uses fresh
// streams, sides alternate. Then the end-to-end latency: appends paced at a steady rate while a
// relay runs, and a JetStream push consumer timestamps each event's arrival: p50 / p99 / max
// from the append call to the consumer's callback.
#include "relay_bench.hpp"

#include <annals/relay.hpp>

#include <nats/nats.h>

#include <fmt/format.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace annals_bench {

namespace {

void nats_check(natsStatus s, std::string_view what) {
  if (s != NATS_OK) {
    throw bench_failure{4, fmt::format("NATS: {}: {}", what, natsStatus_GetText(s))};
  }
}

struct nats_session {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  explicit nats_session(const std::string& url, jsOptions* jo = nullptr) {
    nats_check(natsConnection_ConnectTo(&nc, url.c_str()), "connect to " + url);
    nats_check(natsConnection_JetStream(&js, nc, jo), "JetStream context");
  }
  ~nats_session() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  void create_stream(const std::string& name, const std::string& subjects) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char* subj[] = {subjects.c_str()};
    cfg.Name = name.c_str();
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = 120LL * 1000000000LL;
    jsStreamInfo* si = nullptr;
    nats_check(js_AddStream(&si, js, &cfg, nullptr, nullptr), "create stream " + name);
    jsStreamInfo_Destroy(si);
  }
  void delete_stream(const std::string& name) { (void)js_DeleteStream(js, name.c_str(), nullptr, nullptr); }
};

void remove_store(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
}

// The store: `events` deposits over 100 accounts, in appends of 100.
std::vector<annals::recorded_event> fill_store(const std::string& path, std::int64_t events) {
  auto store = check(annals::open_store(path), "open store");
  auto plan = make_append_plan(events, 100, "account-");
  for (std::int64_t i = 0; i < events; i += 100) {
    std::vector<annals::event_data> batch;
    for (std::int64_t k = i; k < std::min(events, i + 100); ++k) {
      annals::event_data d;
      d.type = type_deposited();
      d.payload = plan.payloads[static_cast<std::size_t>(k)];
      d.metadata.correlation_id = annals::new_uuid_v7();
      d.metadata.causation_id = d.metadata.correlation_id;
      batch.push_back(std::move(d));
    }
    check(store->append(plan.streams[static_cast<std::size_t>(i / 100 % 100)],
                        annals::expected_version::any(), std::move(batch)),
          "append");
  }
  std::vector<annals::recorded_event> all;
  check(store->read_all({}, [&](const annals::recorded_event& e) {
    all.push_back(e);
    return true;
  }),
        "read");
  return all;
}

// The baseline's ack bookkeeping.
struct raw_acks {
  std::mutex mu;
  std::condition_variable cv;
  std::int64_t outstanding = 0;
  std::int64_t failed = 0;
};

void on_raw_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr*, void* closure) {
  auto* a = static_cast<raw_acks*>(closure);
  {
    std::lock_guard lock(a->mu);
    if (!pa) ++a->failed;
    --a->outstanding;
  }
  a->cv.notify_all();
  natsMsg_Destroy(msg);
}

// Publishes `events` as the relay would (subject, headers, payload), batch by batch.
double raw_publish(const std::string& url, const std::string& stream, const std::string& prefix,
                   const std::vector<annals::recorded_event>& events, std::int64_t batch) {
  raw_acks acks;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.AckHandler = on_raw_ack;
  jo.PublishAsync.AckHandlerClosure = &acks;
  jo.PublishAsync.MaxPending = std::max<int64_t>(batch, 256);
  nats_session s(url, &jo);
  s.create_stream(stream, prefix + ".>");
  auto t0 = clock_type::now();
  for (std::size_t i = 0; i < events.size();) {
    std::size_t end = std::min(events.size(), i + static_cast<std::size_t>(batch));
    for (; i < end; ++i) {
      const auto& e = events[i];
      natsMsg* m = nullptr;
      auto subject = annals::relay_subject(prefix, e.stream_id, e.type);
      nats_check(natsMsg_Create(&m, subject.c_str(), nullptr, e.payload.data(),
                                static_cast<int>(e.payload.size())),
                 "message");
      auto pos = std::to_string(e.position), ver = std::to_string(e.stream_version),
           at = std::to_string(e.recorded_at_us);
      natsMsgHeader_Set(m, "Nats-Msg-Id", e.event_id.c_str());
      natsMsgHeader_Set(m, "Annals-Type", e.type.c_str());
      natsMsgHeader_Set(m, "Annals-Position", pos.c_str());
      natsMsgHeader_Set(m, "Annals-Stream", e.stream_id.c_str());
      natsMsgHeader_Set(m, "Annals-Stream-Version", ver.c_str());
      natsMsgHeader_Set(m, "Annals-Correlation-Id", e.metadata.correlation_id.c_str());
      natsMsgHeader_Set(m, "Annals-Causation-Id", e.metadata.causation_id.c_str());
      natsMsgHeader_Set(m, "Annals-Recorded-At", at.c_str());
      {
        std::lock_guard lock(acks.mu);
        ++acks.outstanding;
      }
      nats_check(js_PublishMsgAsync(s.js, &m, nullptr), "publish");
      natsMsg_Destroy(m);
    }
    std::unique_lock lock(acks.mu);
    acks.cv.wait(lock, [&] { return acks.outstanding == 0; });
  }
  double secs = seconds_since(t0);
  if (acks.failed) logic_failure(fmt::format("baseline: {} publishes failed", acks.failed));
  s.delete_stream(stream);
  return secs;
}

double relay_publish(const std::string& url, const std::string& store, const std::string& stream,
                     const std::string& prefix, std::int64_t events, std::int64_t batch) {
  annals::relay_options o;
  o.nats_url = url;
  o.stream = stream;
  o.subject_prefix = prefix;
  o.batch_size = batch;
  auto r = check(annals::relay::open(store, "bench-" + stream, o), "relay open");
  auto t0 = clock_type::now();
  auto n = check(r->catch_up(), "relay catch_up").events;
  double secs = seconds_since(t0);
  if (n != events) logic_failure(fmt::format("relay published {} of {} events", n, events));
  auto info = check(annals::read_jetstream_stream(url, stream), "stream info");
  if (static_cast<std::int64_t>(info.messages) != events) {
    logic_failure(fmt::format("stream {} holds {} messages, not {}", stream, info.messages,
                              events));
  }
  r.reset();
  nats_session(url).delete_stream(stream);
  return secs;
}

// Latency: arrival times by event id.
struct arrivals {
  std::mutex mu;
  std::unordered_map<std::string, clock_type::time_point> at;
};

void on_arrival(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto now = clock_type::now();
  auto* a = static_cast<arrivals*>(closure);
  const char* id = nullptr;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id) {
    std::lock_guard lock(a->mu);
    a->at.emplace(id, now);
  }
  natsMsg_Destroy(msg);
}

void run_latency(const config& c, const std::string& dir, figure& f) {
  const std::string stream = "ANNALS_BENCH_LAT", prefix = "benchlat";
  std::string path = dir + "/relay-latency.db";
  remove_store(path);
  auto store = check(annals::open_store(path), "open store");
  annals::relay_options o;
  o.nats_url = c.nats;
  o.stream = stream;
  o.subject_prefix = prefix;
  auto r = check(annals::relay::open(path, "bench-latency", o), "relay open");
  check(r->start(), "relay start");

  arrivals got;
  nats_session s(c.nats);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckNone;
  so.Config.DeliverPolicy = js_DeliverNew;
  natsSubscription* sub = nullptr;
  nats_check(js_Subscribe(&sub, s.js, (prefix + ".>").c_str(), on_arrival, &got, nullptr, &so,
                          nullptr),
             "push consumer");

  auto plan = make_append_plan(c.relay_latency_events, 20, "account-");
  std::unordered_map<std::string, clock_type::time_point> sent;
  auto interval = std::chrono::duration<double>(1.0 / c.relay_rate);
  auto start = clock_type::now();
  for (std::int64_t i = 0; i < c.relay_latency_events; ++i) {
    std::this_thread::sleep_until(start + std::chrono::duration_cast<clock_type::duration>(
                                              interval * static_cast<double>(i)));
    annals::event_data d;
    d.event_id = annals::new_uuid_v7();
    d.type = type_deposited();
    d.payload = plan.payloads[static_cast<std::size_t>(i)];
    sent.emplace(d.event_id, clock_type::now());
    check(store->append(plan.streams[static_cast<std::size_t>(i % 20)],
                        annals::expected_version::any(), {d}),
          "append");
  }
  auto deadline = clock_type::now() + std::chrono::seconds(10);
  for (;;) {
    {
      std::lock_guard lock(got.mu);
      if (got.at.size() >= sent.size()) break;
    }
    if (clock_type::now() > deadline) logic_failure("latency: events did not all arrive in 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  r->stop();
  std::vector<double> ms;
  {
    std::lock_guard lock(got.mu);
    for (auto& [id, t] : sent) {
      ms.push_back(std::chrono::duration<double, std::milli>(got.at.at(id) - t).count());
    }
  }
  r.reset();
  s.delete_stream(stream);
  remove_store(path);
  f.extra.emplace_back("latency_events", std::to_string(ms.size()));
  f.extra.emplace_back("latency_rate_per_s", num(c.relay_rate, 0));
  f.extra.emplace_back("latency_p50_ms", num(quantile(ms, 0.5), 2));
  f.extra.emplace_back("latency_p99_ms", num(quantile(ms, 0.99), 2));
  f.extra.emplace_back("latency_max_ms", num(quantile(ms, 1.0), 2));
}

}  // namespace

void run_relay(const config& c, const std::string& dir) {
  if (c.nats.empty()) {
    note("relay: skipped (needs --nats URL of a NATS server with JetStream)");
    return;
  }
  figure f;
  f.scenario = "relay";
  f.events = c.relay_events;
  f.baseline_events = c.relay_events;
  const std::int64_t batch = 500;
  f.note = fmt::format(
      "annals::relay catch_up of {} pre-appended deposits to JetStream (file storage, acked, "
      "batches of {}) vs raw nats.c js_PublishMsgAsync of the same messages in batches of {}, "
      "each waiting for its acks; latency: appends at {}/s, relay running, JetStream push "
      "consumer",
      c.relay_events, batch, batch, num(c.relay_rate, 0));
  int rep = 0;
  std::string path = dir + "/relay-throughput.db";
  remove_store(path);
  auto events = fill_store(path, c.relay_events);
  alternate(
      c.reps,
      [&] {
        // A fresh relay subscription (checkpoint 0) per rep over the same store.
        ++rep;
        auto name = fmt::format("ANNALS_BENCH_R{}", rep);
        return relay_publish(c.nats, path, name, fmt::format("benchr{}", rep), c.relay_events,
                             batch);
      },
      [&] {
        ++rep;
        auto name = fmt::format("ANNALS_BENCH_B{}", rep);
        return raw_publish(c.nats, name, fmt::format("benchb{}", rep), events, batch);
      },
      f.annals_seconds, f.baseline_seconds);
  remove_store(path);
  run_latency(c, dir, f);
  print_figure(f);
}

}  // namespace annals_bench
