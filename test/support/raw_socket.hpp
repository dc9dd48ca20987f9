#pragma once

// Byte-level test clients that the transport library would refuse to be: a plain POSIX stream
// socket (TCP or Unix) with timeouts, a one-shot HTTP/1.1 client, and a hand-rolled WebSocket
// client that can send binary frames and never has to read. Header-only so the test support
// library's build needs no change.

#include <lmx/transport/endpoint.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmx::test {

class raw_socket {
public:
    // tcp://, unix:// or ws:// (the TCP connection under the WebSocket, no handshake).
    // `rcvbuf` > 0 shrinks the receive buffer before connecting, so a peer's writes back up fast.
    explicit raw_socket(const std::string& url, int rcvbuf = 0) {
        std::string why;
        auto ep = transport::parse_endpoint(url, &why);
        if (!ep) throw std::runtime_error("bad url " + url + ": " + why);
        if (ep->scheme == transport::endpoint::kind::unix_socket) {
            fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd_ < 0) fail("socket");
            set_rcvbuf(rcvbuf);
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            if (ep->path.size() >= sizeof addr.sun_path) throw std::runtime_error("unix path too long");
            std::memcpy(addr.sun_path, ep->path.c_str(), ep->path.size() + 1);
            if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail("connect " + url);
        } else {
            fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd_ < 0) fail("socket");
            set_rcvbuf(rcvbuf);
            sockaddr_in addr{};
            addr.sin_family = AF_INET;
            addr.sin_port = htons(ep->port);
            if (::inet_pton(AF_INET, ep->host.c_str(), &addr.sin_addr) != 1)
                throw std::runtime_error("raw_socket wants an IPv4 address, not " + ep->host);
            if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail("connect " + url);
            int one = 1;
            ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
    }
    ~raw_socket() { close(); }
    raw_socket(raw_socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    raw_socket& operator=(raw_socket&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }

    int fd() const noexcept { return fd_; }
    void close() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    // Sends all of `bytes`. False when the peer is gone (EPIPE, ECONNRESET) or the socket stays
    // unwritable for `timeout` (a peer that stopped reading).
    bool send_all(std::string_view bytes, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!bytes.empty()) {
            if (!wait_for(POLLOUT, deadline)) return false;
            ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                return false;
            }
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    // Whatever arrives within `timeout`: nullopt when nothing did, "" at end of stream or error.
    std::optional<std::string> recv_some(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (!wait_for(POLLIN, deadline)) return std::nullopt;
            char buf[16384];
            ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
            if (n <= 0) return std::string();
            return std::string(buf, static_cast<std::size_t>(n));
        }
    }

    // Everything until the peer closes; throws if it does not close within `timeout`.
    std::string recv_until_closed(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        std::string all;
        for (;;) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            auto part = recv_some(std::max(left, std::chrono::milliseconds(0)));
            if (!part) throw std::runtime_error("peer did not close within timeout; got: " + all.substr(0, 200));
            if (part->empty()) return all;
            all += *part;
        }
    }

    // True once the peer closed the connection (data still arriving is read and dropped).
    bool closed_by_peer(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() < 0) return false;
            auto part = recv_some(left);
            if (!part) return false;
            if (part->empty()) return true;
        }
    }

    // True once the peer closed or reset the connection, found without reading anything (so a
    // test can stay a client that never reads).
    bool peer_gone(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLRDHUP, 0};
        int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
        return r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    }

private:
    [[noreturn]] static void fail(const std::string& what) {
        throw std::runtime_error(what + ": " + std::strerror(errno));
    }
    void set_rcvbuf(int bytes) {
        if (bytes > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    }
    bool wait_for(short events, std::chrono::steady_clock::time_point deadline) {
        for (;;) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{fd_, events, 0};
            int r = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
            if (r > 0) return true;
            if (r == 0) return false;
            if (errno != EINTR) return false;
        }
    }

    int fd_ = -1;
};

struct http_reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
};

// Splits "HTTP/1.1 200 OK\r\nName: v\r\n\r\nbody" into its parts.
inline http_reply parse_http_reply(const std::string& text) {
    http_reply r;
    auto head_end = text.find("\r\n\r\n");
    if (head_end == std::string::npos || !text.starts_with("HTTP/1."))
        throw std::runtime_error("not an HTTP reply: " + text.substr(0, 200));
    std::string head = text.substr(0, head_end);
    r.body = text.substr(head_end + 4);
    auto sp = head.find(' ');
    r.status = std::stoi(head.substr(sp + 1, 3));
    std::size_t pos = head.find("\r\n");
    while (pos != std::string::npos) {
        auto next = head.find("\r\n", pos + 2);
        auto line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
        if (auto colon = line.find(':'); colon != std::string::npos) {
            std::string name = line.substr(0, colon);
            std::transform(name.begin(), name.end(), name.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            auto value = line.substr(colon + 1);
            value.erase(0, value.find_first_not_of(' '));
            r.headers[name] = value;
        }
        pos = next;
    }
    return r;
}

inline std::string host_port_of(const std::string& url) {
    auto ep = transport::parse_endpoint(url);
    if (!ep) throw std::runtime_error("bad url " + url);
    return ep->host + ":" + std::to_string(ep->port);
}

// One GET (or another method) on the ws listener's HTTP side, with Connection: close. The Host
// header names the listener unless `headers` has one.
inline http_reply http_request(const std::string& ws_url, const std::string& method, const std::string& path,
                               const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    raw_socket s(ws_url);
    const bool has_host = std::any_of(headers.begin(), headers.end(), [](auto& h) { return h.first == "Host"; });
    std::string rq = method + " " + path + " HTTP/1.1\r\n";
    if (!has_host) rq += "Host: " + host_port_of(ws_url) + "\r\n";
    rq += "Connection: close\r\n";
    for (auto& [n, v] : headers) rq += n + ": " + v + "\r\n";
    rq += "\r\n";
    if (!s.send_all(rq)) throw std::runtime_error("cannot send the HTTP request");
    return parse_http_reply(s.recv_until_closed());
}

inline http_reply http_get(const std::string& ws_url, const std::string& path) {
    return http_request(ws_url, "GET", path);
}

// A minimal RFC 6455 client over a raw socket: masked frames of any opcode out, unmasked frames in.
class raw_websocket {
public:
    enum opcode : std::uint8_t { text = 1, binary = 2, close_frame = 8, ping_frame = 9, pong_frame = 10 };

    // Performs the upgrade; `status` is the HTTP status the broker answered (101 when upgraded).
    explicit raw_websocket(const std::string& ws_url, const std::string& origin = {}, int rcvbuf = 0,
                           const std::vector<std::pair<std::string, std::string>>& headers = {})
        : sock_(ws_url, rcvbuf) {
        auto ep = transport::parse_endpoint(ws_url);
        std::string rq =
            "GET " + (ep->path.empty() ? std::string("/") : ep->path) + " HTTP/1.1\r\nHost: " + host_port_of(ws_url) +
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n";
        if (!origin.empty()) rq += "Origin: " + origin + "\r\n";
        for (const auto& [name, value] : headers) rq += name + ": " + value + "\r\n";
        rq += "\r\n";
        if (!sock_.send_all(rq)) throw std::runtime_error("cannot send the upgrade request");
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (buf_.find("\r\n\r\n") == std::string::npos) {
            auto part = sock_.recv_some(
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
            if (!part) throw std::runtime_error("no answer to the upgrade request");
            if (part->empty()) break;
            buf_ += *part;
        }
        auto end = buf_.find("\r\n\r\n");
        if (end == std::string::npos) throw std::runtime_error("connection closed during the upgrade: " + buf_);
        // A refused upgrade carries a body too; it is not a frame.
        response = parse_http_reply(buf_.substr(0, end + 4));
        buf_.erase(0, end + 4);
        status = response.status;
    }

    int status = 0;
    http_reply response;
    raw_socket& socket() noexcept { return sock_; }

    static std::string frame(std::uint8_t op, std::string_view payload, bool fin = true) {
        std::string f;
        f += static_cast<char>((fin ? 0x80 : 0) | op);
        const std::size_t n = payload.size();
        if (n < 126) {
            f += static_cast<char>(0x80 | n);
        } else if (n <= 0xffff) {
            f += static_cast<char>(0x80 | 126);
            f += static_cast<char>(n >> 8);
            f += static_cast<char>(n & 0xff);
        } else {
            f += static_cast<char>(0x80 | 127);
            for (int i = 7; i >= 0; --i) f += static_cast<char>((n >> (8 * i)) & 0xff);
        }
        const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
        f.append(reinterpret_cast<const char*>(mask), 4);
        for (std::size_t i = 0; i < n; ++i) f += static_cast<char>(payload[i] ^ static_cast<char>(mask[i % 4]));
        return f;
    }

    bool send(std::uint8_t op, std::string_view payload, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        return sock_.send_all(frame(op, payload), timeout);
    }
    bool send_text(std::string_view payload) { return send(text, payload); }

    struct message {
        std::uint8_t op = 0;
        std::string payload;
    };
    // The next frame (control frames included); nullopt on timeout; op 0 with "" at end of stream.
    std::optional<message> recv(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (auto m = take()) return m;
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() < 0) return std::nullopt;
            auto part = sock_.recv_some(left);
            if (!part) return std::nullopt;
            if (part->empty()) return message{};
            buf_ += *part;
        }
    }

private:
    std::optional<message> take() {
        if (buf_.size() < 2) return std::nullopt;
        auto b = [&](std::size_t i) { return static_cast<unsigned char>(buf_[i]); };
        std::size_t len = b(1) & 0x7f, at = 2;
        if (len == 126) {
            if (buf_.size() < 4) return std::nullopt;
            len = (std::size_t{b(2)} << 8) | b(3);
            at = 4;
        } else if (len == 127) {
            if (buf_.size() < 10) return std::nullopt;
            len = 0;
            for (std::size_t i = 0; i < 8; ++i) len = (len << 8) | b(2 + i);
            at = 10;
        }
        if (buf_.size() < at + len) return std::nullopt;
        message m{static_cast<std::uint8_t>(b(0) & 0x0f), buf_.substr(at, len)};
        buf_.erase(0, at + len);
        return m;
    }

    raw_socket sock_;
    std::string buf_;
};

}  // namespace lmx::test
