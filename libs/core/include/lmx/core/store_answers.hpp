#pragma once

// The frames that answer a lock store's answer effects (unlocked, extended, released_many,
// cancelled): one writer for the broker's lock service and for the tests that play its part.

#include <lmx/core/lock_store.hpp>

#include <string>

namespace lmx::core {

// Appends the answer frame for `e` (is_answer(e.kind), non-empty e.uuid) to `out`.
void write_answer(std::string& out, const effect& e);

}  // namespace lmx::core
