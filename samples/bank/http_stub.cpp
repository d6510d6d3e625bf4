// `bank serve` when the framework is built without annals_http (cpp-httplib missing).
#include "http.hpp"

#include "cli.hpp"

#include <CLI/CLI.hpp>

namespace bank::cli {

void add_http_commands(CLI::App& app, const std::string&, const int&, int& code) {
  auto* cmd = app.add_subcommand("serve", "Serve the bank over HTTP (not built: no annals_http)");
  static int port = 0;
  static std::string bind, token;
  cmd->add_option("--port", port);
  cmd->add_option("--bind", bind);
  cmd->add_option("--token", token);
  cmd->add_flag("--no-saga");
  cmd->callback([&code] {
    code = report(annals::error(annals::errc::invalid_argument,
                                "this bank was built without annals_http: install "
                                "libcpp-httplib-dev and rebuild"));
  });
}

}  // namespace bank::cli
