#pragma once

// What this binary was built from: `lmx --version`, /healthz and the lmx_build_info metric say it.

#include <string_view>

namespace lmx {

// git's short hash of the commit built, "-dirty" appended when tracked files differed from it;
// LMX_BUILD_COMMIT from the build's environment when set; "unknown" outside a git checkout.
std::string_view build_commit() noexcept;
// The CMake build type (Release, RelWithDebInfo, Debug, ...), "unspecified" when none was set.
std::string_view build_type() noexcept;

}  // namespace lmx
