#pragma once

#include <lmx/broker/broker.hpp>
#include <lmx/core/lock_table.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/transport/listener.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// The embedded dashboard ("/"), browser client ("/lmx.js") and its declarations ("/lmx.d.ts");
// nothing for other paths.
std::optional<transport::http_response> web_page(std::string_view path);

// What /healthz reports; cheap to gather (no scan of the keys).
struct health_state {
    std::uint64_t uptime_ms = 0;
    std::uint64_t connections = 0;
    std::string reason;  // empty: healthy
    std::uint64_t store_failures = 0;
};

// 200 {"status":"ok",...} or 503 {"status":"unhealthy","reason":...}.
transport::http_response healthz_page(const health_state& h);
transport::http_response stats_page(const core::broker_stats& st);
transport::http_response metrics_page(const core::broker_stats& st, const core::table_counters& c,
                                      const wait_histogram& waits, core::fencing_token last_token,
                                      const health_state& h);

}  // namespace lmx::detail
