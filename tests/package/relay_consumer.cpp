// Links annals::annals_nats from the installed package: the relay's subject scheme.
#include <annals/relay.hpp>

#include <cstdio>
#include <string>

int main() {
  const std::string s = annals::relay_subject("annals", "account-42", "bank.v1.MoneyDeposited");
  std::printf("%s\n", s.c_str());
  return s == "annals.account.bank_v1_MoneyDeposited" ? 0 : 1;
}
