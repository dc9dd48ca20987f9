#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace lmx::detail {

// Time from queueing to grant (immediate grants count as zero), for the Prometheus histogram.
class wait_histogram {
public:
    static constexpr std::array<double, 12> bounds = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60};
    void observe(std::chrono::steady_clock::duration waited) noexcept {
        double s = std::chrono::duration<double>(waited).count();
        std::size_t i = 0;
        while (i < bounds.size() && s > bounds[i]) ++i;
        ++counts_[i];
        sum_ += s;
        ++count_;
    }
    const std::array<std::uint64_t, bounds.size() + 1>& counts() const noexcept { return counts_; }
    double sum() const noexcept { return sum_; }
    std::uint64_t count() const noexcept { return count_; }

private:
    std::array<std::uint64_t, bounds.size() + 1> counts_{};
    double sum_ = 0;
    std::uint64_t count_ = 0;
};

}  // namespace lmx::detail
