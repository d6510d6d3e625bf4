// Defines an aggregate in user code, handles a command, reloads it: the first thing a user does.
#include <annals/command.hpp>
#include <annals/store.hpp>

#include "counter.pb.h"

#include <cstdio>
#include <string>

struct tally {
  using events = annals::event_list<counter::v1::Incremented>;
  void apply(const counter::v1::Incremented& e) { total += e.by(); }
  long total = 0;
};

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto store = annals::open_sqlite_store(argv[1]);
  if (!store) return annals::exit_code(store.error().kind());
  for (int i = 0; i < 3; ++i) {
    auto r = annals::handle<tally>(**store, "counter-1", [](const tally&) {
      counter::v1::Incremented e;
      e.set_by(2);
      return annals::decision<tally>::emit(e);
    });
    if (!r) return annals::exit_code(r.error().kind());
  }
  auto loaded = annals::load<tally>(**store, "counter-1");
  if (!loaded || loaded->state.total != 6 || loaded->version != 2) return 1;
  std::puts("consumer ok: total 6 at version 2");
#ifdef ANNALS_EXPECT_NO_POSTGRES
  // Linked with annals::sqlite alone: a PostgreSQL URI is refused, naming what to link.
  auto pg = annals::open_store("postgresql://127.0.0.1:1/none");
  if (pg || pg.error().kind() != annals::errc::invalid_argument ||
      pg.error().message().find("annals::postgres") == std::string::npos) {
    std::puts("a PostgreSQL URI was not refused as expected");
    return 1;
  }
  std::printf("without PostgreSQL: %s\n", pg.error().message().c_str());
#endif
  return 0;
}
