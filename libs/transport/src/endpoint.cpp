#include <lmx/transport/endpoint.hpp>

#include <sys/un.h>

#include <algorithm>
#include <cctype>

namespace lmx::transport {
namespace {

std::optional<endpoint> fail(std::string* error, std::string text) {
    if (error) *error = std::move(text);
    return std::nullopt;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// 'text', appended piece by piece: g++ 12 warns -Wrestrict (wrongly) on "'" + std::string(text)
// at -O3.
std::string in_quotes(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    out.append(1, '\'').append(text).append(1, '\'');
    return out;
}

bool valid_host_char(char c) {
    const auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '%' || u >= 0x80;
}

// Parses "host:port" or "[v6]:port" into `ep`; returns an error sentence or empty.
std::string parse_authority(std::string_view url, std::string_view authority, endpoint& ep) {
    const std::string quoted = in_quotes(url);
    if (authority.empty()) return "missing host and port in " + quoted;
    if (authority.find('@') != std::string_view::npos) return "user info is not supported in " + quoted;

    std::string_view host;
    std::string_view rest;  // ":port" or empty
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos) return "missing ']' after the IPv6 address in " + quoted;
        host = authority.substr(1, close - 1);
        rest = authority.substr(close + 1);
        if (host.empty()) return "empty IPv6 address in " + quoted;
        const auto percent = host.find('%');
        const auto address = host.substr(0, percent);
        auto zone = percent == std::string_view::npos ? std::string_view{} : host.substr(percent + 1);
        if (zone.starts_with("25")) zone.remove_prefix(2);  // RFC 6874 writes the zone id as "%25eth0"
        if (address.empty() || address.find(':') == std::string_view::npos ||
            !std::all_of(address.begin(), address.end(),
                         [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'; }) ||
            (percent != std::string_view::npos &&
             (zone.empty() || !std::all_of(zone.begin(), zone.end(), valid_host_char))))
            return "bad IPv6 address '" + std::string(host) + "' in " + quoted;
        ep.host = std::string(address);
        if (percent != std::string_view::npos) ep.host += "%" + std::string(zone);
    } else {
        const auto colon = authority.find(':');
        if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos)
            return "IPv6 addresses must be written in brackets, e.g. tcp://[::1]:4444, in " + quoted;
        host = authority.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
        if (host.empty()) return "missing host in " + quoted;
        if (!std::all_of(host.begin(), host.end(), [](char c) { return c != '%' && valid_host_char(c); }))
            return "bad host name '" + std::string(host) + "' in " + quoted;
        ep.host = std::string(host);
    }

    if (rest.empty())
        return "missing port in " + quoted + " (expected " + std::string(scheme_name(ep)) + "://host:port)";
    if (rest.front() != ':') return "unexpected '" + std::string(rest) + "' after the host in " + quoted;
    const auto digits = rest.substr(1);
    if (digits.empty()) return "missing port number after ':' in " + quoted;
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return "port '" + std::string(digits) + "' is not a number in " + quoted;
    unsigned long value = 0;
    for (const char c : digits) {
        value = value * 10 + static_cast<unsigned long>(c - '0');
        if (value > 65535) return "port " + std::string(digits) + " is out of range (0-65535) in " + quoted;
    }
    ep.port = static_cast<std::uint16_t>(value);
    return {};
}

}  // namespace

std::string_view to_string(endpoint::kind k) noexcept {
    switch (k) {
        case endpoint::kind::tcp: return "tcp";
        case endpoint::kind::unix_socket: return "unix";
        case endpoint::kind::websocket: return "ws";
    }
    return "?";
}

std::string_view scheme_name(const endpoint& ep) noexcept {
    if (ep.tls && ep.scheme == endpoint::kind::tcp) return "tls";
    if (ep.tls && ep.scheme == endpoint::kind::websocket) return "wss";
    return to_string(ep.scheme);
}

std::optional<endpoint> parse_endpoint(std::string_view url, std::string* error) {
    const std::string quoted = in_quotes(url);
    const auto sep = url.find("://");
    if (sep == std::string_view::npos)
        return fail(error, "missing scheme in " + quoted +
                               " (expected tcp://host:port, tls://host:port, unix:///path, ws://host:port/path or "
                               "wss://host:port/path)");

    const auto scheme = url.substr(0, sep);
    const auto rest = url.substr(sep + 3);
    endpoint ep;
    if (iequals(scheme, "tcp")) {
        ep.scheme = endpoint::kind::tcp;
    } else if (iequals(scheme, "unix")) {
        ep.scheme = endpoint::kind::unix_socket;
    } else if (iequals(scheme, "ws")) {
        ep.scheme = endpoint::kind::websocket;
    } else if (iequals(scheme, "tls")) {
        ep.scheme = endpoint::kind::tcp;
        ep.tls = true;
    } else if (iequals(scheme, "wss")) {
        ep.scheme = endpoint::kind::websocket;
        ep.tls = true;
    } else {
        return fail(error, "unknown scheme '" + std::string(scheme) + "' in " + quoted +
                               " (expected tcp, tls, unix, ws or wss)");
    }

    if (ep.scheme == endpoint::kind::unix_socket) {
        if (rest.empty()) return fail(error, "missing socket path in " + quoted + " (expected unix:///abs/path)");
        if (rest.front() != '/')
            return fail(error, "unix socket path must be absolute in " + quoted + " (expected unix:///abs/path)");
        if (rest.size() >= sizeof(sockaddr_un::sun_path))
            return fail(error, "unix socket path is too long in " + quoted + " (at most " +
                                   std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes)");
        if (rest.find('\0') != std::string_view::npos) return fail(error, "NUL byte in the socket path " + quoted);
        ep.path = std::string(rest);
        return ep;
    }

    const auto path_start = rest.find_first_of("/?#");
    const auto authority = rest.substr(0, path_start);
    auto path = path_start == std::string_view::npos ? std::string_view{} : rest.substr(path_start);
    if (auto text = parse_authority(url, authority, ep); !text.empty()) return fail(error, std::move(text));

    if (ep.scheme == endpoint::kind::tcp) {
        if (!path.empty() && path != "/")
            return fail(error, "a " + std::string(scheme_name(ep)) + " URL takes no path: " + quoted);
        return ep;
    }
    if (!path.empty() && path.front() == '#') path = {};
    if (const auto hash = path.find('#'); hash != std::string_view::npos) path = path.substr(0, hash);
    // "/?query" appended piece by piece (see in_quotes).
    ep.path = "/";
    if (!path.empty() && path.front() == '?')
        ep.path.append(path);
    else if (!path.empty())
        ep.path.assign(path);
    return ep;
}

std::string to_string(const endpoint& ep) {
    std::string out(scheme_name(ep));
    out += "://";
    if (ep.scheme == endpoint::kind::unix_socket) return out + ep.path;
    if (ep.host.find(':') != std::string::npos) {
        const auto percent = ep.host.find('%');
        out += '[';
        out += ep.host.substr(0, percent);
        if (percent != std::string::npos) out += "%25" + ep.host.substr(percent + 1);
        out += ']';
    } else {
        out += ep.host;
    }
    out += ':';
    out += std::to_string(ep.port);
    if (ep.scheme == endpoint::kind::websocket) out += ep.path.empty() ? std::string("/") : ep.path;
    return out;
}

}  // namespace lmx::transport
