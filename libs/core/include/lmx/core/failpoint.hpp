#pragma once

// Failpoints: named steps that tests can make fail or stall, in test builds only (CMake option
// LMX_FAILPOINTS, on in the test preset). In other builds LMX_FAILPOINT(name) is a constant
// `off` action, so the checks compile away.
//
// Configured from the environment variable LMX_FAILPOINTS, read once:
//
//   LMX_FAILPOINTS='fencing.store=1*off->3*error->off;deadline.tick=sleep(200)'
//
// Each failpoint has a chain of terms separated by "->". A term is an action with an optional
// count: `N*action` applies to the next N hits, then the chain moves on; a term without a count
// applies to every later hit. Actions: off, error, sleep(MS), abort. docs/guarantees.md lists
// the failpoints the code has.

#include <chrono>
#include <string>
#include <string_view>

namespace lmx::failpoint {

struct action {
    enum class kind : unsigned char { off, error, sleep, abort } what = kind::off;
    std::chrono::milliseconds delay{0};  // sleep

    bool off() const noexcept { return what == kind::off; }
    bool error() const noexcept { return what == kind::error; }
    bool sleep() const noexcept { return what == kind::sleep; }
};

// Evaluates one hit of failpoint `name`. `abort` aborts the process here.
action hit(std::string_view name) noexcept;

// Replaces the configuration (same syntax as LMX_FAILPOINTS); returns an error text, empty when
// it was understood. For tests that run in one process.
std::string configure(std::string_view spec);

}  // namespace lmx::failpoint

#if defined(LMX_FAILPOINTS_ENABLED)
#define LMX_FAILPOINT(name) ::lmx::failpoint::hit(name)
#else
#define LMX_FAILPOINT(name) \
    ::lmx::failpoint::action {}
#endif
