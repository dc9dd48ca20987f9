#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lmx::transport {

// Where a broker listens or a client connects:
//   tcp://host:port        host: name, IPv4, or [IPv6]
//   tls://host:port        NDJSON over TLS (scheme kind::tcp, tls = true)
//   unix:///abs/path       Unix domain stream socket
//   ws://host:port/path    WebSocket (path defaults to "/", query kept)
//   wss://host:port/path   WebSocket over TLS (scheme kind::websocket, tls = true)
struct endpoint {
    enum class kind { tcp, unix_socket, websocket };
    kind scheme = kind::tcp;
    std::string host;  // without the IPv6 brackets
    std::uint16_t port = 0;
    std::string path;  // unix: the socket path; ws: the request target
    bool tls = false;  // tls:// and wss://; never set for unix

    friend bool operator==(const endpoint&, const endpoint&) = default;
};

// Returns nullopt on a bad URL and, if `error` is set, a sentence saying what is wrong.
std::optional<endpoint> parse_endpoint(std::string_view url, std::string* error = nullptr);

std::string to_string(const endpoint& ep);
std::string_view to_string(endpoint::kind k) noexcept;      // "tcp", "unix", "ws"
std::string_view scheme_name(const endpoint& ep) noexcept;  // "tcp", "tls", "unix", "ws", "wss"

}  // namespace lmx::transport
