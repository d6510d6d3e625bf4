// `annals`: inspect, verify, export and import any Annals store without the application's code
// (events are decoded from the descriptors stored in the store). Command-line parsing only;
// the commands are in commands.cpp.
#include "commands.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <iostream>

namespace {
std::atomic<bool> stop_requested{false};
void on_signal(int) { stop_requested.store(true); }
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "annals: inspect, verify, export, import and migrate an Annals event store.\n"
      "A store is a path, sqlite:PATH or postgresql://user@host:port/dbname.\n"
      "Exit codes: 0 ok; 1 problems found (verify), breaking change (schema check), stream or "
      "type not found, a migration that does not read back identical; 2 usage or bad input "
      "(including a non-empty import or migrate target); 4 storage error (missing store, not "
      "an Annals store, newer format, corruption, a server that does not answer) or a file "
      "that cannot be read or written."};
  app.require_subcommand(1);
  // --db goes before or after the command (`annals --db F streams`, `annals streams --db F`).
  std::string db;
  app.add_option("--db", db, "the store: a path, sqlite:PATH or postgresql://...");
  auto with_db = [&](CLI::App* sub) {
    sub->add_option("--db", db, "the store: a path, sqlite:PATH or postgresql://... (required)");
    return sub;
  };
  std::function<int()> command;

  annals::tool::streams_options so;
  auto* streams =
      with_db(app.add_subcommand("streams", "list streams, their versions and event counts"));
  streams->add_option("--prefix", so.prefix, "only streams whose id starts with this");
  streams->add_option("--limit", so.limit, "at most this many streams")
      ->check(CLI::NonNegativeNumber);

  annals::tool::read_options ro;
  auto* read = with_db(app.add_subcommand("read", "show one stream's events, decoded"));
  read->add_option("stream", ro.stream, "the stream id")->required();
  read->add_option("--from", ro.from, "first version (default: the start, or the end backward)")
      ->check(CLI::NonNegativeNumber);
  read->add_flag("--backward", ro.backward, "newest first");
  read->add_option("--limit", ro.limit, "at most this many events")->check(CLI::NonNegativeNumber);
  read->add_flag("--json", ro.json, "one JSON object per line");

  annals::tool::tail_options to;
  auto* tail = with_db(
      app.add_subcommand("tail", "show $all from a position, optionally following new events"));
  tail->add_option("--from", to.from, "first position (default 1)")->check(CLI::PositiveNumber);
  tail->add_flag("--follow", to.follow, "keep printing new events until SIGINT or SIGTERM");
  tail->add_option("--type", to.types, "only this event type (repeatable)");
  tail->add_option("--prefix", to.prefix, "only streams whose id starts with this");
  tail->add_option("--limit", to.limit, "stop after this many events")
      ->check(CLI::NonNegativeNumber);
  tail->add_flag("--json", to.json, "one JSON object per line");

  auto* stats = with_db(
      app.add_subcommand("stats", "counts, sizes, largest streams, event types, projections"));
  auto* verify = with_db(app.add_subcommand(
      "verify",
      "check the whole store; prints each problem and warning with its position, exit 1 if any "
      "problem (warnings: what could not be checked, such as types without a stored schema)"));

  std::string output = "-", input = "-";
  auto* exp = with_db(app.add_subcommand("export", "write every schema and event as JSON lines"));
  exp->add_option("--output", output, "file to write (default: stdout)");
  auto* imp = with_db(app.add_subcommand(
      "import", "read an export into an empty or new store, exactly, all or nothing"));
  imp->add_option("--input", input, "file to read (default: stdin)");

  auto* schema = app.add_subcommand("schema", "the event schemas kept in the store");
  schema->require_subcommand(1);
  auto* slist = with_db(schema->add_subcommand("list", "every stored type and version"));
  std::string type;
  int version = 0;
  auto* show = with_db(schema->add_subcommand("show", "a stored descriptor as .proto-like text"));
  show->add_option("type", type, "the event type's full name")->required();
  show->add_option("--version", version, "the stored version (default: the latest)")
      ->check(CLI::PositiveNumber);
  std::string descriptor_set;
  auto* check = with_db(schema->add_subcommand(
      "check", "check new descriptors against the stored ones: exit 0 compatible, 1 breaking"));
  check
      ->add_option("--descriptor-set", descriptor_set,
                   "a FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE)")
      ->required();

  // `consumers` (projections and subscriptions) and the older `subscriptions` (subscriptions
  // only): the same four commands.
  struct consumer_commands {
    CLI::App *list, *parked, *retry, *skip;
  };
  std::string sub_name;
  std::int64_t sub_position = 0;
  bool sub_all = false;
  auto add_consumer_commands = [&](const char* group, const char* what, const char* one,
                                   const char* retry_what, const char* skip_what) {
    auto* g = app.add_subcommand(group, what);
    g->require_subcommand(1);
    consumer_commands out{};
    out.list = with_db(g->add_subcommand(
        "list", fmt::format("every {}: checkpoint, head, lag in events and seconds, parked count",
                            one)));
    out.parked = with_db(
        g->add_subcommand("parked", fmt::format("a {}'s parked (dead-lettered) events", one)));
    out.parked->add_option("name", sub_name, one)->required();
    out.retry = with_db(g->add_subcommand("retry", retry_what));
    out.skip = with_db(g->add_subcommand("skip", skip_what));
    for (auto* sub : {out.retry, out.skip}) {
      sub->add_option("name", sub_name, one)->required();
      auto* pos = sub->add_option("--position", sub_position, "the parked event's position")
                      ->check(CLI::PositiveNumber);
      auto* all = sub->add_flag("--all", sub_all, fmt::format("every parked event of the {}", one));
      pos->excludes(all);
      all->excludes(pos);
    }
    return out;
  };
  auto consumers = add_consumer_commands(
      "consumers",
      "projections and subscriptions, their checkpoints and lag, and their parked events (a "
      "name both kinds have: projection:NAME or subscription:NAME)",
      "consumer",
      "retry parked events (a subscription redelivers them; a projection applies its stuck "
      "event again on its runner's next catch-up)",
      "record that parked events will not be delivered (a projection moves past the event it "
      "is stuck at: give its --position)");
  auto subs = add_consumer_commands(
      "subscriptions", "subscribers, their checkpoints and lag, and their parked events",
      "subscription", "ask the running subscription to deliver parked events again",
      "record that parked events will not be delivered");

  annals::tool::serve_options serve_o;
  auto* serve = with_db(app.add_subcommand(
      "serve",
      "serve the store over HTTP, read-only: /streams, /all, /subscribe (Server-Sent Events), "
      "/projections, /subscriptions, /metrics (Prometheus), /health; until SIGINT or SIGTERM"));
  serve->add_option("--port", serve_o.port, "TCP port (default 8080; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  serve->add_option("--bind", serve_o.bind, "address to listen on (default 127.0.0.1)");

  std::string migrate_from, migrate_to;
  auto* migrate = app.add_subcommand(
      "migrate",
      "copy the store FROM into the empty store TO (SQLite or PostgreSQL, either way), all or "
      "nothing, then re-read both and compare every event byte for byte, the streams and the "
      "schemas. Snapshots, projections and read models are not copied (rebuild them at TO). "
      "Exit 0 identical, 1 copied but different, 2 TO not empty (nothing written), 4 storage "
      "error");
  migrate->add_option("FROM", migrate_from, "the store to copy")->required();
  migrate->add_option("TO", migrate_to, "an empty or new store")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (*migrate) {
    annals::tool::context c{migrate_from, std::cout, std::cerr};
    return annals::tool::migrate(c, migrate_to);
  }
  if (db.empty()) {
    std::cerr << "--db is required\nRun with --help for more information.\n";
    return 2;
  }
  annals::tool::context c{db, std::cout, std::cerr};
  if (*streams) return annals::tool::streams(c, so);
  if (*read) return annals::tool::read(c, ro);
  if (*tail || *serve) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    if (*serve) return annals::tool::serve(c, serve_o, stop_requested);
    return annals::tool::tail(c, to, stop_requested);
  }
  if (*stats) return annals::tool::stats(c);
  if (*verify) return annals::tool::verify(c);
  if (*exp) return annals::tool::export_events(c, output);
  if (*imp) return annals::tool::import_events(c, input);
  if (*slist) return annals::tool::schema_list(c);
  if (*show) return annals::tool::schema_show(c, type, version);
  if (*check) return annals::tool::schema_check(c, descriptor_set);
  for (const auto* group : {&consumers, &subs}) {
    const bool all_kinds = group == &consumers;
    if (*group->list) {
      return all_kinds ? annals::tool::consumers_list(c) : annals::tool::subscriptions_list(c);
    }
    if (*group->parked) {
      return all_kinds ? annals::tool::consumers_parked(c, sub_name)
                       : annals::tool::subscriptions_parked(c, sub_name);
    }
    if (*group->retry || *group->skip) {
      if (sub_position == 0 && !sub_all) {
        std::cerr << "give --position P or --all\nRun with --help for more information.\n";
        return 2;
      }
      const bool retry = bool(*group->retry);
      return all_kinds ? annals::tool::consumers_resolve(c, sub_name, sub_position, retry)
                       : annals::tool::subscriptions_resolve(c, sub_name, sub_position, retry);
    }
  }
  return 2;
}
