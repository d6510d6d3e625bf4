// Links annals::annals_http from the installed package: the metrics exposition of a new store.
#include <annals/event_store.hpp>
#include <annals/http.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (!annals::open_store(argv[1]).ok()) return 1;  // creates it
  auto text = annals::prometheus_metrics(argv[1]);
  if (!text.ok()) return 1;
  std::printf("%zu bytes of metrics\n", text.value().size());
  return text.value().find("annals_head_position 0\n") != std::string::npos ? 0 : 1;
}
