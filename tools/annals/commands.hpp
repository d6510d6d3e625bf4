// The `annals` tool's commands, without the command-line parsing (main.cpp): each takes its
// options, writes results to `out` and messages to `err`, and returns the exit code:
// 0 ok, 1 problems found / breaking change / stream or type not found, 2 usage or bad input,
// 4 storage error (missing store, not an Annals store, newer format, corruption, I/O) and
// an --input, --output or --descriptor-set file that cannot be opened.
#pragma once

#include <atomic>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace annals::tool {

struct streams_options {
  std::string prefix;
  std::int64_t limit = -1;  // -1: all
};
struct read_options {
  std::string stream;
  std::int64_t from = -1;  // version; -1: the start (or the end, backward)
  bool backward = false;
  std::int64_t limit = -1;
  bool json = false;
};
struct tail_options {
  std::int64_t from = 1;  // position
  bool follow = false;
  std::vector<std::string> types;
  std::string prefix;
  std::int64_t limit = -1;
  bool json = false;
};

struct serve_options {
  int port = 8080;                 // 0: any free port
  std::string bind = "127.0.0.1";
};

struct context {
  std::string db;
  std::ostream& out;
  std::ostream& err;
};

int streams(const context& c, const streams_options& o);
int read(const context& c, const read_options& o);
// With o.follow, keeps printing new events as they are appended until `stop` becomes true.
int tail(const context& c, const tail_options& o, const std::atomic<bool>& stop);
int stats(const context& c);
int verify(const context& c);
int export_events(const context& c, const std::string& output);  // "-" : stdout
int import_events(const context& c, const std::string& input);   // "-" : stdin
int schema_list(const context& c);
int schema_show(const context& c, const std::string& type, std::int32_t version);  // 0: latest
int schema_check(const context& c, const std::string& descriptor_set_file);
// Subscriptions (subscriptions.cpp): each subscriber with its checkpoint and lag; its parked
// events; retry (the running subscription redelivers them) or skip them; position 0: all.
// An unknown subscription or parked event exits 1.
int subscriptions_list(const context& c);
// Serves the built-in HTTP routes (serve.cpp), read-only, until `stop`; prints the URL.
int serve(const context& c, const serve_options& o, const std::atomic<bool>& stop);
int subscriptions_parked(const context& c, const std::string& name);
int subscriptions_resolve(const context& c, const std::string& name, std::int64_t position,
                          bool retry);
// Consumers (subscriptions.cpp): projections and subscriptions side by side (annals/consumers.hpp);
// a consumer's parked events; retry or skip them (position 0: all). An unknown consumer or
// parked event exits 1; a name both kinds have, unqualified, exits 2.
int consumers_list(const context& c);
int consumers_parked(const context& c, const std::string& name);
int consumers_resolve(const context& c, const std::string& name, std::int64_t position,
                      bool retry);
// Copies the store c.db into the empty store `to` (any backends), then compares them: 0 when
// identical, 1 when copied but different, 2 when `to` is not empty (nothing written), 4 for a
// missing or foreign source, an unreachable server or a source row that cannot be copied.
int migrate(const context& c, const std::string& to);

}  // namespace annals::tool
