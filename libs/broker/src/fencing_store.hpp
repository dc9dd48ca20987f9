#pragma once

#include <cstdint>
#include <string>

namespace lmx::detail {

// Persists the fencing-token reservation ceiling under the state directory so that tokens never
// go backwards across restarts. Tokens are reserved in blocks: one fsync per block, not per grant.
class fencing_store {
public:
    // Empty dir: nothing is persisted; the seed comes from the wall clock in microseconds.
    explicit fencing_store(std::string dir) : dir_(std::move(dir)) {}

    // The token to seed the table with (all earlier tokens are <= it). Throws std::runtime_error
    // with a clear message when the state directory is unusable or its file is corrupt.
    std::uint64_t load();
    // Persists `ceiling` durably (write temp, fsync, rename, fsync dir). Throws on failure.
    void store(std::uint64_t ceiling);
    bool enabled() const noexcept { return !dir_.empty(); }
    std::string path() const { return dir_ + "/fencing"; }

private:
    std::string dir_;
};

}  // namespace lmx::detail
