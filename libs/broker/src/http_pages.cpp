#include "http_pages.hpp"
#include "web_assets.hpp"

#include <lmx/broker/build_info.hpp>
#include <lmx/version.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>

namespace lmx::detail {

namespace {
constexpr const char* json_type = "application/json";

// `value` in the fewest digits that read back as it (40.187, not 40.186999999999998); a whole
// number as one (1000000, not 1e+06).
void number(std::string& out, double value) {
    char text[64];
    const bool whole = std::isfinite(value) && std::abs(value) < 9.007199254740992e15 && std::trunc(value) == value;
    const auto r = whole ? std::to_chars(text, text + sizeof text, static_cast<long long>(value))
                         : std::to_chars(text, text + sizeof text, value);
    out.append(text, r.ptr);
}

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
    out += name;
    out += ' ';
    number(out, value);
    out += '\n';
}
}  // namespace

std::optional<transport::http_response> web_page(std::string_view path) {
    for (const auto& a : web_assets()) {
        if (a.path != path) continue;
        transport::http_response r{200, std::string(a.content_type), std::string(a.body), {}};
        // Revalidate every time: the files change with the broker binary.
        r.headers.emplace_back("Cache-Control", "no-cache");
        r.headers.emplace_back("X-Content-Type-Options", "nosniff");
        if (a.content_type.starts_with("text/html")) {
            // The dashboard loads only its own inline code and /lmx.js, and talks only to this broker.
            r.headers.emplace_back("Content-Security-Policy",
                                   "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                                   "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'");
            r.headers.emplace_back("Referrer-Policy", "no-referrer");
        } else {
            // Pages of any origin may import the client (a module import is a CORS request). The
            // files are public and the same for everyone; whether such a page may then open a
            // WebSocket is decided by the Origin check of the upgrade (--allow-origin).
            r.headers.emplace_back("Access-Control-Allow-Origin", "*");
        }
        return r;
    }
    return std::nullopt;
}

transport::http_response healthz_page(const health_state& h) {
    const bool ok = h.reason.empty();
    boost::json::object o{{"status", ok ? "ok" : "unhealthy"}, {"version", LMX_VERSION_STRING},
                          {"commit", build_commit()},          {"build_type", build_type()},
                          {"uptime_ms", h.uptime_ms},          {"connections", h.connections}};
    if (!ok) o["reason"] = h.reason;
    transport::http_response r{ok ? 200u : 503u, json_type, boost::json::serialize(o) + "\n", {}};
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
}

transport::http_response stats_page(const core::broker_stats& st) {
    // The same figures as system-stats-response: write that frame and hand out its `stats`.
    // The object is handed out as written, not parsed and written again: Boost.JSON would write
    // the uptime's 40.187 as 4.0187E1.
    std::string frame;
    core::write_system_stats(frame, "", st);
    const auto at = frame.find("\"stats\":");
    const auto end = frame.rfind('}');
    if (at == std::string::npos || end == std::string::npos || end <= at) return {500, json_type, "{}\n", {}};
    std::string body = frame.substr(at + 8, end - at - 8);
    body += '\n';
    return {200, json_type, std::move(body), {}};
}

transport::http_response metrics_page(const core::broker_stats& st, const core::table_counters& c,
                                      const wait_histogram& waits, core::fencing_token last_token,
                                      const health_state& h) {
    std::string out;
    out.reserve(4096);
    auto d = [](auto v) { return static_cast<double>(v); };
    metric(out, "lmx_up", "gauge", "1 while the broker serves.", 1);
    out +=
        "# HELP lmx_build_info The broker's version, protocol, commit and build type; always 1.\n"
        "# TYPE lmx_build_info gauge\n"
        "lmx_build_info{version=\"" LMX_VERSION_STRING "\",protocol=\"";
    out += std::to_string(LMX_PROTOCOL_VERSION);
    out += "\",commit=\"";
    out += build_commit();
    out += "\",build_type=\"";
    out += build_type();
    out += "\"} 1\n";
    metric(out, "lmx_healthy", "gauge",
           "1 when the broker can grant locks; 0 while its fencing state cannot be persisted.",
           h.reason.empty() ? 1 : 0);
    metric(out, "lmx_fencing_store_failures_total", "counter", "Failed writes of the fencing state.",
           d(h.store_failures));
    metric(out, "lmx_uptime_seconds", "gauge", "Seconds since the broker started.", d(st.uptime_ms) / 1000.0);
    metric(out, "lmx_connections", "gauge", "Open client connections.", d(st.connections));
    metric(out, "lmx_connections_total", "counter", "Client connections accepted.", d(st.connections_total));
    metric(out, "lmx_connections_refused_total", "counter",
           "Connections refused at --max-connections or --max-connections-per-peer.", d(st.connections_refused));
    metric(out, "lmx_auth_refused_total", "counter", "Connections refused for want of a valid token.",
           d(st.auth_refused));
    metric(out, "lmx_clients_cut_off_total", "counter", "Clients disconnected for not reading their replies.",
           d(st.clients_cut_off));
    metric(out, "lmx_keys", "gauge", "Keys with holders or waiters.", d(c.keys));
    metric(out, "lmx_holders", "gauge", "Holds on all keys.", d(c.holders));
    metric(out, "lmx_waiters", "gauge", "Queued lock requests on all keys.", d(c.waiters));
    metric(out, "lmx_grants_total", "counter", "Locks granted.", d(c.grants));
    metric(out, "lmx_releases_total", "counter", "Holds ended (unlock, ttl, force, disconnect).", d(c.releases));
    metric(out, "lmx_expirations_total", "counter", "Holds ended by their ttl.", d(c.expirations));
    metric(out, "lmx_timeouts_total", "counter", "Queued requests removed at their timeout.", d(c.timeouts));
    metric(out, "lmx_forced_total", "counter", "Holds ended by a force unlock.", d(c.forced));
    metric(out, "lmx_refused_total", "counter", "Try-locks not granted.", d(c.refused));
    metric(out, "lmx_cancelled_total", "counter", "Queued requests withdrawn.", d(c.cancelled));
    metric(out, "lmx_rejected_total", "counter", "Lock requests refused for bad input or limits.", d(c.rejected));
    metric(out, "lmx_messages_in_total", "counter", "Protocol messages received.", d(st.messages_in));
    metric(out, "lmx_messages_out_total", "counter", "Protocol messages sent.", d(st.messages_out));
    metric(out, "lmx_fencing_token_last", "gauge", "The last fencing token handed out.", d(last_token));

    out += "# HELP lmx_acquire_wait_seconds Time from a lock request to its grant.\n";
    out += "# TYPE lmx_acquire_wait_seconds histogram\n";
    std::uint64_t cumulative = 0;
    char line[128];
    for (std::size_t i = 0; i < wait_histogram::bounds.size(); ++i) {
        cumulative += waits.counts()[i];
        std::snprintf(line, sizeof line, "lmx_acquire_wait_seconds_bucket{le=\"%g\"} %llu\n", wait_histogram::bounds[i],
                      static_cast<unsigned long long>(cumulative));
        out += line;
    }
    cumulative += waits.counts().back();
    std::snprintf(line, sizeof line, "lmx_acquire_wait_seconds_bucket{le=\"+Inf\"} %llu\n",
                  static_cast<unsigned long long>(cumulative));
    out += line;
    std::snprintf(line, sizeof line, "lmx_acquire_wait_seconds_sum %.9g\nlmx_acquire_wait_seconds_count %llu\n",
                  waits.sum(), static_cast<unsigned long long>(waits.count()));
    out += line;
    return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(out), {}};
}

}  // namespace lmx::detail
