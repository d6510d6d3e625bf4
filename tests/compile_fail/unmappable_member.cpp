// Must not compile: a read-model row has a member whose type cannot be a column
// (std::vector<int>). ctest checks that the compiler's message names
// read_model_member_type_is_not_supported<std::vector<int> >.
#include <annals/read_model.hpp>

#include <boost/hana/define_struct.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace {

struct tagged_row {
  BOOST_HANA_DEFINE_STRUCT(tagged_row, (std::string, id), (std::vector<int>, tags));
  static constexpr std::string_view table = "tagged";
  static constexpr std::string_view key[] = {"id"};
};

}  // namespace

// Never called: the template instantiation alone must fail.
annals::result<void> write(annals::sql_tx& tx) { return tx.upsert(tagged_row{"a", {1, 2}}); }

int main() { return 0; }
