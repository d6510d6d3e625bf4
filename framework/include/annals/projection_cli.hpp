// annals/projection_cli.hpp — the projection admin commands, for any application's CLI11 app.
//
//   CLI::App app{"myapp"};
//   std::string db = "app.db";
//   int code = 0;
//   app.add_option("--db", db);
//   annals::add_projection_commands(app, db, [] { return my_projections(); }, code);
//   CLI11_PARSE(app, argc, argv);
//   return code;
//
// adds `projections list | status | rebuild NAME [--verify] | reset NAME | parked NAME |
// retry NAME | skip NAME POSITION`. Exit codes (through `exit_code`): 0 ok, 1 verify found
// differences or a projection is still stuck after retry, 2 bad input (unknown projection,
// wrong position), 4 storage error or busy (e.g. a rebuild already running).
// Link annals::annals_cli.
#pragma once

#include <annals/projection.hpp>
#include <annals/projection_runner.hpp>
#include <annals/store.hpp>

#include <functional>
#include <string>

namespace CLI {
class App;
}

namespace annals {

// `store_path` and `exit_code` are referenced, not copied: they must outlive app.parse().
// `projections` is called when a command runs. `options` are those of every runner the
// commands open; `store` the options the store at `store_path` is opened with (give the
// application's upcasters here, as to its own open_store; its busy_timeout_ms is the store
// connections' wait; the store is never created: not_found).
void add_projection_commands(CLI::App& app, const std::string& store_path,
                             std::function<projection_list()> projections, int& exit_code,
                             runner_options options = {}, sqlite_options store = {});

}  // namespace annals
