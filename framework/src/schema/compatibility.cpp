// Descriptor compatibility rules (annals/schema.hpp). STUB: being written (issue 4).
#include <annals/schema.hpp>
