#include "http_policy.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace lmx::detail {

bool http_policy::literal_host(std::string_view host_port) {
    std::string_view h = host_port;
    if (h.starts_with('[')) return true;  // an IPv6 literal
    h = h.substr(0, h.rfind(':') == std::string_view::npos ? h.size() : h.rfind(':'));
    if (h == "localhost") return true;
    return !h.empty() && h.find_first_not_of("0123456789.") == std::string_view::npos;
}

bool http_policy::origin_allowed(std::string_view origin) const {
    for (const auto& o : allow_origins_)
        if (o == "*" || o == origin) return true;
    return false;
}

bool http_policy::browser_may_read(const transport::http_request_view& rq) const {
    if (rq.origin.empty() && rq.sec_fetch_site.empty()) return true;
    if (literal_host(rq.host)) return true;
    if (!rq.origin.empty() && origin_allowed(rq.origin)) return true;
    const std::string host(rq.host);
    return origin_allowed("http://" + host) || origin_allowed("https://" + host);
}

bool http_policy::websocket_origin_ok(const transport::http_request_view& rq) const {
    if (rq.origin.empty()) return true;  // not a browser
    if (origin_allowed(rq.origin)) return true;
    // Our own pages: the Origin names the Host the browser connected to. Only when that host is
    // an IP literal or localhost, so that a DNS-rebinding name pointing at us does not pass.
    const bool same_origin =
        rq.origin == "http://" + std::string(rq.host) || rq.origin == "https://" + std::string(rq.host);
    return same_origin && literal_host(rq.host);
}

transport::http_response http_policy::origin_page(const transport::http_request_view& rq,
                                                  const std::vector<std::string>& websocket_paths) const {
    const bool allowed = websocket_origin_ok(rq);
    boost::json::array paths;
    for (const auto& p : websocket_paths) paths.emplace_back(p);
    boost::json::object o{{"origin", rq.origin}, {"allowed", allowed}, {"websocketPaths", std::move(paths)}};
    if (!allowed)
        o["hint"] = "the broker refuses WebSocket connections from this origin; start it with --allow-origin " +
                    std::string(rq.origin.empty() ? "ORIGIN" : rq.origin);
    return {200,
            "application/json",
            boost::json::serialize(o) + "\n",
            {{"Access-Control-Allow-Origin", "*"}, {"Cache-Control", "no-store"}}};
}

}  // namespace lmx::detail
