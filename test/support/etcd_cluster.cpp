#include "etcd_cluster.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace lmx::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const char* etcd_binary() {
    const char* other = std::getenv("LMX_ETCD");
    return other && *other ? other : "/usr/bin/etcd";
}

// The lowest port of the kernel's ephemeral range (32768 if it cannot be read).
unsigned ephemeral_low() {
    std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
    unsigned low = 0;
    return in >> low && low > 11024 ? low : 32768;
}

// `n` distinct loopback ports free at the time of the call, below the ephemeral range: a port
// from that range may be taken at any moment as the local port of another test's outgoing
// connection, and then the member cannot listen on it. Every socket stays bound until all are
// chosen, so that none is handed out twice.
std::vector<unsigned> free_ports(std::size_t n) {
    static std::mt19937 rng{std::random_device{}()};
    std::uniform_int_distribution<unsigned> pick(10000, ephemeral_low() - 1);
    std::vector<int> fds;
    std::vector<unsigned> ports;
    for (int tries = 0; ports.size() < n; ++tries) {
        if (tries > 1000) throw std::runtime_error("no free loopback port");
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) throw std::runtime_error("no socket for a free port");
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(pick(rng)));
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(fd);
            continue;
        }
        fds.push_back(fd);
        ports.push_back(ntohs(a.sin_port));
    }
    for (int fd : fds) ::close(fd);
    return ports;
}

// GET /health: true once the member serves requests through an elected leader.
bool healthy(unsigned port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string answer;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        const std::string req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
            char buf[1024];
            for (ssize_t k; (k = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, static_cast<std::size_t>(k));
        }
    }
    ::close(fd);
    return answer.find("\"health\":\"true\"") != std::string::npos;
}

std::string url(unsigned port, bool tls = false) {
    return (tls ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(port);
}
}  // namespace

etcd_cluster::etcd_cluster(int members, std::optional<etcd_tls> tls) : tls_(std::move(tls)) {
    if (members < 1) throw std::invalid_argument("an etcd cluster needs a member");
    dir_ = std::make_unique<temp_dir>(fs::is_directory("/dev/shm") ? "/dev/shm" : "");
    token_ = "lmx-test-" + std::to_string(std::random_device{}());
    const auto ports = free_ports(2 * static_cast<std::size_t>(members));
    for (int i = 0; i < members; ++i) members_.push_back({"m" + std::to_string(i), ports[2 * i], ports[2 * i + 1], -1});
    for (auto& m : members_) start(m, true);
    for (auto& m : members_) wait_ready(m);
}

etcd_cluster::~etcd_cluster() {
    for (auto& m : members_)
        if (m.pid > 0) {
            ::kill(m.pid, SIGKILL);
            wait_for(m.pid, 10s);
        }
}

void etcd_cluster::start(member& m, bool fresh) {
    std::string initial;
    for (const auto& o : members_) initial += (initial.empty() ? "" : ",") + o.name + "=" + url(o.peer_port);
    const auto client_url = url(m.client_port, tls_.has_value());
    std::vector<std::string> args = {etcd_binary(), "--name", m.name, "--data-dir", dir_->path() + "/" + m.name};
    const std::pair<const char*, std::string> flags[] = {
        {"--listen-client-urls", client_url},
        {"--advertise-client-urls", client_url},
        {"--listen-peer-urls", url(m.peer_port)},
        {"--initial-advertise-peer-urls", url(m.peer_port)},
        {"--initial-cluster", initial},
        {"--initial-cluster-token", token_},
        {"--initial-cluster-state", fresh ? "new" : "existing"},
        // Short heartbeats and elections: a test that kills the leader waits for the next one.
        {"--heartbeat-interval", "50"},
        {"--election-timeout", "500"},
        {"--logger", "zap"},
        // info: a member serving TLS says in its log when it is ready.
        {"--log-level", tls_ ? "info" : "warn"},
    };
    for (const auto& [flag, value] : flags) args.insert(args.end(), {flag, value});
    args.emplace_back("--experimental-enable-lease-checkpoint");
    if (tls_)
        args.insert(args.end(), {"--cert-file", tls_->cert, "--key-file", tls_->key, "--trusted-ca-file", tls_->ca,
                                 "--client-cert-auth"});
    m.pid = spawn(args, dir_->path() + "/" + m.name + ".log");
}

void etcd_cluster::wait_ready(const member& m) const {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    // /health over TLS would need the client certificate; such a member's log says when it serves.
    const auto ready = [&] {
        return tls_ ? log(static_cast<int>(&m - members_.data())).find("serving client traffic securely") !=
                          std::string::npos
                    : healthy(m.client_port);
    };
    while (!ready()) {
        if (!running(static_cast<int>(&m - members_.data())))
            throw std::runtime_error("etcd " + m.name +
                                     " exited at start-up: " + log(static_cast<int>(&m - members_.data())));
        if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("etcd " + m.name +
                                     " did not become ready in 30 s: " + log(static_cast<int>(&m - members_.data())));
        std::this_thread::sleep_for(20ms);
    }
}

std::vector<std::string> etcd_cluster::endpoints() const {
    std::vector<std::string> out;
    for (int i = 0; i < size(); ++i) out.push_back(endpoint(i));
    return out;
}

std::string etcd_cluster::endpoint(int i) const {
    const auto port = std::to_string(members_.at(static_cast<std::size_t>(i)).client_port);
    return (tls_ ? "https://127.0.0.1:" : "127.0.0.1:") + port;
}

void etcd_cluster::kill(int i) {
    auto& m = members_.at(static_cast<std::size_t>(i));
    if (m.pid <= 0) return;
    ::kill(m.pid, SIGKILL);
    wait_for(m.pid, 10s);
    m.pid = -1;
}

void etcd_cluster::pause(int i) { ::kill(members_.at(static_cast<std::size_t>(i)).pid, SIGSTOP); }
void etcd_cluster::resume(int i) { ::kill(members_.at(static_cast<std::size_t>(i)).pid, SIGCONT); }

void etcd_cluster::restart(int i) {
    auto& m = members_.at(static_cast<std::size_t>(i));
    if (m.pid > 0) throw std::logic_error("etcd " + m.name + " is running");
    start(m, false);
    wait_ready(m);
}

bool etcd_cluster::running(int i) const {
    const auto& m = members_.at(static_cast<std::size_t>(i));
    return m.pid > 0 && ::kill(m.pid, 0) == 0 && wait_for(m.pid, 0ms) < 0;
}

std::string etcd_cluster::log(int i) const {
    std::ifstream in(dir_->path() + "/" + members_.at(static_cast<std::size_t>(i)).name + ".log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace lmx::test
