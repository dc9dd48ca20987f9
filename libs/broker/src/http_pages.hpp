#pragma once

#include <lmx/broker/broker.hpp>
#include <lmx/core/lock_store.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/transport/listener.hpp>

#include "wait_histogram.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lmx::detail {

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
