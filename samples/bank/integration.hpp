// The bank's integration with other services over NATS JetStream (integration.cpp):
//   bank relay   publishes the store's events to JetStream (annals/relay.hpp)
//   bank notify  the notification service: consumes the account events with a durable
//                consumer, records one notification per event in its own SQLite database
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace bank::cli {

// Adds `relay` and `notify` to the bank CLI. `db` is the --db option's value (read when a
// command runs); `code` receives the command's exit code.
void add_integration_commands(CLI::App& app, const std::string& db, int& code);

}  // namespace bank::cli
