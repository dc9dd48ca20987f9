// lmx-floor: the physical floor under a lock round trip. An echo server and a client exchanging
// 100-byte newline-terminated messages between two processes, with plain blocking POSIX sockets
// (tcp, unix) or a synchronous Boost.Beast WebSocket (ws), no protocol work at all.
//
//   lmx-floor serve --listen tcp://127.0.0.1:0 [--listen unix:///tmp/f.sock] [--listen ws://127.0.0.1:0/] --urls-file F
//   lmx-floor run --url URL --mode pingpong|pipeline [--count N] [--depth 20] [--json]
//
// pingpong: one message in flight; each round trip is timed. pipeline: `depth` messages in
// flight; each reply lets one more go out (replies read in batches, answered with one write).

#include "bench_common.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using namespace lmx::bench;

struct endpoint {
    enum kind { tcp, unix_socket, ws } scheme = tcp;
    std::string host;  // tcp, ws
    unsigned port = 0;
    std::string path;  // unix: socket file; ws: request target
};

std::optional<endpoint> parse(const std::string& url) {
    endpoint ep;
    std::string rest;
    if (url.rfind("unix://", 0) == 0) {
        ep.scheme = endpoint::unix_socket;
        ep.path = url.substr(7);
        return ep.path.empty() ? std::nullopt : std::optional(ep);
    }
    if (url.rfind("tcp://", 0) == 0)
        rest = url.substr(6);
    else if (url.rfind("ws://", 0) == 0)
        ep.scheme = endpoint::ws, rest = url.substr(5);
    else
        return std::nullopt;
    auto slash = rest.find('/');
    ep.path = slash == std::string::npos ? "/" : rest.substr(slash);
    rest = rest.substr(0, slash);
    auto colon = rest.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    ep.host = rest.substr(0, colon);
    ep.port = static_cast<unsigned>(std::stoul(rest.substr(colon + 1)));
    return ep;
}

[[noreturn]] void die(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

void no_delay(int fd) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        auto k = ::send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

void echo_stream(int fd) {
    char buf[65536];
    for (;;) {
        auto k = ::read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0 || !write_all(fd, buf, static_cast<std::size_t>(k))) break;
    }
    ::close(fd);
}

void echo_ws(int fd) {
    try {
        asio::io_context io(1);
        websocket::stream<asio::ip::tcp::socket> ws(asio::ip::tcp::socket(io, asio::ip::tcp::v4(), fd));
        ws.accept();
        ws.text(true);
        beast::flat_buffer buf;
        for (;;) {
            ws.read(buf);
            ws.write(buf.data());
            buf.consume(buf.size());
        }
    } catch (const std::exception&) {
        // the client went away
    }
}

struct bound {
    int fd;
    endpoint ep;
    std::string url;
};

bound listen_on(const endpoint& ep) {
    bound b{-1, ep, {}};
    if (ep.scheme == endpoint::unix_socket) {
        b.fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        if (ep.path.size() >= sizeof sa.sun_path) throw std::runtime_error("unix socket path too long");
        std::memcpy(sa.sun_path, ep.path.c_str(), ep.path.size() + 1);
        ::unlink(ep.path.c_str());
        if (::bind(b.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("bind " + ep.path);
        b.url = "unix://" + ep.path;
    } else {
        b.fd = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(b.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(ep.port));
        if (::inet_pton(AF_INET, ep.host.c_str(), &sa.sin_addr) != 1)
            throw std::runtime_error("not an IPv4 address: " + ep.host);
        if (::bind(b.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("bind " + ep.host);
        socklen_t len = sizeof sa;
        ::getsockname(b.fd, reinterpret_cast<sockaddr*>(&sa), &len);
        b.url = std::string(ep.scheme == endpoint::ws ? "ws://" : "tcp://") + ep.host + ":" +
                std::to_string(ntohs(sa.sin_port)) + (ep.scheme == endpoint::ws ? ep.path : "");
    }
    if (::listen(b.fd, 128) != 0) die("listen");
    return b;
}

int serve(const std::vector<std::string>& urls, const std::string& urls_file) {
    std::vector<bound> listeners;
    std::string list;
    for (auto& u : urls) {
        auto ep = parse(u);
        if (!ep) throw std::runtime_error("bad --listen " + u);
        listeners.push_back(listen_on(*ep));
        list += listeners.back().url + "\n";
    }
    if (!urls_file.empty()) {
        std::ofstream(urls_file + ".tmp") << list;
        std::rename((urls_file + ".tmp").c_str(), urls_file.c_str());
    } else {
        std::fputs(list.c_str(), stdout);
        std::fflush(stdout);
    }
    std::vector<std::thread> acceptors;
    for (auto& l : listeners) {
        acceptors.emplace_back([l] {
            for (;;) {
                int fd = ::accept(l.fd, nullptr, nullptr);
                if (fd < 0) {
                    if (errno == EINTR || errno == ECONNABORTED) continue;
                    return;
                }
                if (l.ep.scheme != endpoint::unix_socket) no_delay(fd);
                if (l.ep.scheme == endpoint::ws)
                    std::thread(echo_ws, fd).detach();
                else
                    std::thread(echo_stream, fd).detach();
            }
        });
    }
    for (auto& t : acceptors) t.join();
    return 0;
}

int connect_to(const endpoint& ep) {
    if (ep.scheme == endpoint::unix_socket) {
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::memcpy(sa.sun_path, ep.path.c_str(), std::min(ep.path.size() + 1, sizeof sa.sun_path - 1));
        if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("connect " + ep.path);
        return fd;
    }
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(ep.port));
    ::inet_pton(AF_INET, ep.host.c_str(), &sa.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("connect " + ep.host);
    no_delay(fd);
    return fd;
}

struct exchange {
    virtual ~exchange() = default;
    virtual void send(const std::string& msgs) = 0;
    // Reads at least one whole message; returns how many arrived.
    virtual std::size_t receive() = 0;
};

class stream_exchange final : public exchange {
public:
    explicit stream_exchange(int fd) : fd_(fd) {}
    ~stream_exchange() override { ::close(fd_); }
    void send(const std::string& msgs) override {
        if (!write_all(fd_, msgs.data(), msgs.size())) die("write");
    }
    std::size_t receive() override {
        std::size_t lines = 0;
        while (lines == 0) {
            auto k = ::read(fd_, buf_, sizeof buf_);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) die("read");
            for (ssize_t i = 0; i < k; ++i) lines += buf_[i] == '\n';
        }
        return lines;
    }

private:
    int fd_;
    char buf_[65536];
};

class ws_exchange final : public exchange {
public:
    ws_exchange(const endpoint& ep, int fd) : ws_(asio::ip::tcp::socket(io_, asio::ip::tcp::v4(), fd)) {
        ws_.handshake(ep.host + ":" + std::to_string(ep.port), ep.path);
        ws_.text(true);
    }
    void send(const std::string& msgs) override {
        // One WebSocket message per line, as a broker frames its replies.
        for (std::size_t at = 0; at < msgs.size();) {
            auto nl = msgs.find('\n', at);
            ws_.write(asio::buffer(msgs.data() + at, nl - at + 1));
            at = nl + 1;
        }
    }
    std::size_t receive() override {
        ws_.read(buf_);
        buf_.consume(buf_.size());
        return 1;
    }

private:
    asio::io_context io_{1};
    websocket::stream<asio::ip::tcp::socket> ws_;
    beast::flat_buffer buf_;
};

int run(const std::string& url, const std::string& mode, std::size_t count, unsigned depth, std::size_t size,
        bool json) {
    auto ep = parse(url);
    if (!ep) throw std::runtime_error("bad --url " + url);
    if (mode != "pingpong" && mode != "pipeline") throw std::runtime_error("--mode is pingpong or pipeline");
    int fd = connect_to(*ep);
    std::unique_ptr<exchange> x;
    if (ep->scheme == endpoint::ws)
        x = std::make_unique<ws_exchange>(*ep, fd);
    else
        x = std::make_unique<stream_exchange>(fd);
    std::string msg(size - 1, 'x');
    msg += '\n';
    bool pipelined = mode == "pipeline";
    if (!pipelined) depth = 1;
    std::vector<std::uint64_t> rtt;
    rtt.reserve(count);
    progress prog("floor " + mode + " " + url);
    std::string batch;

    auto t0 = bench_clock::now();
    const std::uint64_t cpu0 = process_cpu_ns();
    std::size_t sent = 0, received = 0;
    {
        std::size_t first = std::min<std::size_t>(depth, count);
        for (std::size_t i = 0; i < first; ++i) batch += msg;
        sent = first;
        x->send(batch);
    }
    auto last = bench_clock::now();
    while (received < count) {
        std::size_t got = x->receive();
        received += got;
        if (!pipelined) {
            auto now = bench_clock::now();
            rtt.push_back(ns_between(last, now));
            last = now;
        }
        std::size_t more = std::min(got, count - sent);
        if (more > 0) {
            batch.clear();
            for (std::size_t i = 0; i < more; ++i) batch += msg;
            sent += more;
            x->send(batch);
        }
        prog.update(received, count);
    }
    double wall_ms = std::chrono::duration<double, std::milli>(bench_clock::now() - t0).count();
    const double cpu_ms = static_cast<double>(process_cpu_ns() - cpu0) / 1e6;
    prog.finish();
    auto s = summarize(rtt);
    double rate = static_cast<double>(count) / wall_ms;
    if (json) {
        std::printf(
            "{\"client\":\"floor\",\"mode\":%s,\"url\":%s,\"messages\":%zu,\"depth\":%u,\"size\":%zu,"
            "\"wall_ms\":%.3f,\"round_trips_per_ms\":%.3f,\"rtt_us\":%s,\"cpu_ms\":%.3f}\n",
            json_string(mode).c_str(), json_string(url).c_str(), count, depth, size, wall_ms, rate,
            json_summary(s).c_str(), cpu_ms);
    } else {
        std::printf(
            "floor %s %s: %zu messages of %zu bytes, %u in flight, in %.1f ms = %.2f round trips/ms; "
            "rtt p50 %.1f us p99 %.1f us\n",
            mode.c_str(), url.c_str(), count, size, depth, wall_ms, rate, s.p50_us, s.p99_us);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"lmx-floor: echo ping-pong and pipelined echo between two processes (the transport floor)"};
    app.require_subcommand(1);
    std::vector<std::string> listen;
    std::string urls_file;
    auto* serve_cmd = app.add_subcommand("serve", "Echo server");
    serve_cmd->add_option("-l,--listen", listen, "tcp://HOST:PORT, unix:///PATH or ws://HOST:PORT/PATH, repeatable")
        ->required();
    serve_cmd->add_option("--urls-file", urls_file, "Write the bound URLs here (default: stdout)");
    std::string url, mode = "pingpong";
    std::size_t count = 10000, size = 100;
    unsigned depth = 20;
    bool json = false;
    auto* run_cmd = app.add_subcommand("run", "Client: time round trips");
    run_cmd->add_option("--url", url, "Echo server URL")->required();
    run_cmd->add_option("--mode", mode, "pingpong (one in flight) or pipeline")->default_val("pingpong");
    run_cmd->add_option("-n,--count", count, "Messages")->default_val(10000)->check(CLI::PositiveNumber);
    run_cmd->add_option("--depth", depth, "Messages in flight (pipeline)")->default_val(20)->check(CLI::PositiveNumber);
    run_cmd->add_option("--size", size, "Bytes per message, newline included")
        ->default_val(100)
        ->check(CLI::Range(2, 65536));
    run_cmd->add_flag("--json", json, "One JSON object on stdout");
    CLI11_PARSE(app, argc, argv);
    try {
        if (serve_cmd->parsed()) return serve(listen, urls_file);
        return run(url, mode, count, depth, size, json);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lmx-floor: %s\n", e.what());
        return 1;
    }
}
