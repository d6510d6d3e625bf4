// Must not compile: a decision of bank::account emits a Protobuf message that bank::account does
// not list in its event_list. ctest checks the static_assert's message.
#include <google/protobuf/timestamp.pb.h>

#include "account.hpp"

int main() {
  google::protobuf::Timestamp not_an_account_event;
  not_an_account_event.set_seconds(1);
  auto d = annals::decision<bank::account>::emit(not_an_account_event);
  return d.events().empty() ? 1 : 0;
}
