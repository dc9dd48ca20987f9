#pragma once

// Private to libs/broker: who may read the HTTP pages and open a WebSocket, judged by the Host and
// Origin headers against --allow-origin.

#include <lmx/transport/listener.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace lmx::detail {

class http_policy {
public:
    explicit http_policy(std::vector<std::string> allow_origins) : allow_origins_(std::move(allow_origins)) {}

    // Plain HTTP requests made by a browser (it sends Origin or Sec-Fetch-Site; programs send
    // neither) must name the broker by an IP literal or localhost: a DNS-rebinding name pointing
    // at us must not let a foreign page read /v1/stats or /metrics. A name is fine when its
    // origin, or the Origin of the page asking, is allowed.
    bool browser_may_read(const transport::http_request_view& rq) const;

    // WebSocket upgrades: programs (no Origin), allowed origins, and our own pages when they were
    // loaded from an IP literal or localhost.
    bool websocket_origin_ok(const transport::http_request_view& rq) const;

    // /v1/origin: a browser cannot read why a WebSocket upgrade failed, so a refused page asks
    // here (readable from any origin) whether its origin is the reason, and on which paths the
    // listener it asked upgrades (`websocket_paths`): a path among them whose upgrade failed
    // met a broker that was not listening yet, not a wrong endpoint.
    transport::http_response origin_page(const transport::http_request_view& rq,
                                         const std::vector<std::string>& websocket_paths) const;

    // "127.0.0.1:6971", "[::1]:6971", "localhost:6971": a host no DNS answer can redirect.
    static bool literal_host(std::string_view host_port);

private:
    bool origin_allowed(std::string_view origin) const;

    std::vector<std::string> allow_origins_;
};

}  // namespace lmx::detail
