// One client process of `lmx check`: a few raw protocol connections issuing random operations,
// every frame sent and received written to its history before it is sent or as it arrives.
// Raw sockets and poll(), so that what goes on the wire is exactly what the history says, and so
// that the process can close connections abruptly and be killed at any point.

#include "check.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <memory>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <random>
#include <set>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace lmx::check {

namespace json = boost::json;

std::int64_t mono_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

history_file::history_file(const std::string& path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

history_file::~history_file() { ::close(fd_); }

void history_file::record(const std::string& src, std::int64_t session, const char* ev, std::string_view m,
                          std::string_view how, std::string_view extra) {
    std::string line = "{\"t\":" + std::to_string(mono_ns()) + ",\"src\":\"" + src +
                       "\",\"s\":" + std::to_string(session) + ",\"ev\":\"" + ev + "\"";
    if (!m.empty()) line.append(",\"m\":").append(m);
    if (!how.empty()) line.append(",\"how\":\"").append(how).append("\"");
    if (!extra.empty()) line.append(",").append(extra);
    line += "}\n";
    std::size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw std::runtime_error(std::string("cannot write the history: ") + std::strerror(errno));
        off += static_cast<std::size_t>(n);
    }
}

int connect_to(const std::string& url) {
    if (url.starts_with("unix://")) {
        std::string path = url.substr(7);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        if (path.size() >= sizeof a.sun_path) return -1;
        std::memcpy(a.sun_path, path.data(), path.size());
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(fd);
            return -1;
        }
        return fd;
    }
    if (!url.starts_with("tcp://")) return -1;
    std::string hp = url.substr(6);
    auto colon = hp.rfind(':');
    if (colon == std::string::npos) return -1;
    std::string host = hp.substr(0, colon), port = hp.substr(colon + 1);
    if (host.starts_with('[')) host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return -1;
    int fd = -1;
    for (auto* ai = res; ai; ai = ai->ai_next) {
        fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        ::close(fd);
        fd = -1;
    }
    ::freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

namespace {

struct pending_lock {
    std::vector<std::string> keys;
    bool multi = false;
    bool queued = false;
    bool abandoned = false;
    bool withdrawing = false;  // a cancel or unlock of it is on its way: no retry, no second withdrawal
    std::string frame;
};

struct hold {
    std::vector<std::string> keys;
    bool multi = false;
};

struct connection {
    int no = 0;
    int fd = -1;
    std::string in, out;
    std::string hello_id;
    bool ready = false;
    std::map<std::string, pending_lock> locks;
    std::map<std::string, hold> holds;
    std::map<std::string, std::string> calls;  // uuid -> type; for cancel/unlock also the target
    std::map<std::string, std::string> targets;

    std::size_t waiting() const {
        std::size_t n = 0;
        for (auto& [id, l] : locks)
            if (!l.abandoned) ++n;
        return n;
    }
};

class worker {
public:
    explicit worker(const worker_config& cfg) : cfg_(cfg), hist_(cfg.history), rng_(cfg.seed) {
        int fd = ::open(cfg.board.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) throw std::runtime_error("cannot open the board " + cfg.board);
        void* p = ::mmap(nullptr, sizeof(board), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw std::runtime_error("cannot map the board");
        board_ = static_cast<board*>(p);
    }
    ~worker() {
        for (auto& c : conns_)
            if (c->fd >= 0) ::close(c->fd);
        ::munmap(board_, sizeof(board));
    }

    int run() {
        std::int64_t drain_deadline = 0;
        for (;;) {
            const bool stop = board_->stop.load(std::memory_order_relaxed) != 0;
            if (stop && !draining_) {
                draining_ = true;
                drain_deadline = mono_ns() + 15'000'000'000;
                for (auto& c : conns_) drain(*c);
            }
            if (draining_) {
                bool done = std::all_of(conns_.begin(), conns_.end(), [](auto& c) {
                    return c->fd < 0 || (c->ready && c->locks.empty() && c->holds.empty() && c->calls.empty());
                });
                if (done || mono_ns() > drain_deadline) break;
            } else {
                maintain_connections();
                // Lock requests and other calls are bounded apart, so that a connection whose lock
                // requests all wait can still release what it holds.
                const auto depth = static_cast<std::size_t>(cfg_.depth);
                for (auto& c : conns_)
                    while (c->fd >= 0 && c->ready && c->calls.size() < depth &&
                           (c->waiting() < depth || !c->holds.empty()))
                        issue(*c);
            }
            pump(5);
        }
        for (auto& c : conns_) close_cleanly(*c);
        hist_.record(cfg_.id, 0, "end");
        return 0;
    }

private:
    void maintain_connections() {
        std::erase_if(conns_, [](auto& c) { return c->fd < 0; });
        const std::int64_t now = mono_ns();
        while (static_cast<int>(conns_.size()) < cfg_.sessions && now >= retry_at_) {
            int fd = connect_to(cfg_.url);
            if (fd < 0) {
                retry_at_ = now + 20'000'000;  // the broker may be restarting
                return;
            }
            ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
            auto c = std::make_unique<connection>();
            c->no = ++sessions_;
            c->fd = fd;
            hist_.record(cfg_.id, c->no, "open");
            c->hello_id = next_id();
            send(*c, json::object{{"type", "hello"}, {"uuid", c->hello_id}, {"client", "lmx-check"}, {"protocol", 1}});
            conns_.push_back(std::move(c));
        }
    }

    // Recorded before the close: the broker may hand the connection's locks on at once.
    void drop(connection& c, const char* how) {
        if (c.fd < 0) return;
        hist_.record(cfg_.id, c.no, "close", {}, how);
        if (std::string_view(how) == "abort") {
            linger l{1, 0};  // close with a reset, as a crashing peer would
            ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        ::close(c.fd);
        c.fd = -1;
    }

    // Drained: say so, then read until the broker closes, so every answer is in the history.
    void close_cleanly(connection& c) {
        if (c.fd < 0) return;
        flush(c);
        hist_.record(cfg_.id, c.no, "close", {}, "clean");
        ::shutdown(c.fd, SHUT_WR);
        const std::int64_t until = mono_ns() + 3'000'000'000;
        while (c.fd >= 0 && mono_ns() < until) {
            pollfd p{c.fd, POLLIN, 0};
            if (::poll(&p, 1, 50) > 0 && !read_some(c)) break;
        }
        if (c.fd >= 0) {
            ::close(c.fd);
            c.fd = -1;
        }
    }

    void pump(int timeout_ms) {
        std::vector<pollfd> fds;
        std::vector<connection*> who;
        for (auto& c : conns_) {
            if (c->fd < 0) continue;
            fds.push_back({c->fd, static_cast<short>(POLLIN | (c->out.empty() ? 0 : POLLOUT)), 0});
            who.push_back(c.get());
        }
        if (fds.empty()) {
            ::usleep(static_cast<useconds_t>(timeout_ms) * 1000);
            return;
        }
        if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
        for (std::size_t i = 0; i < fds.size(); ++i) {
            connection& c = *who[i];
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (!read_some(c)) {
                    drop(c, "lost");
                    continue;
                }
            }
            if (c.fd >= 0 && (fds[i].revents & POLLOUT)) flush(c);
        }
    }

    // False at end of stream or on error.
    bool read_some(connection& c) {
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
            if (n > 0) {
                c.in.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 && errno == EINTR) continue;
            deliver(c);
            return false;
        }
        deliver(c);
        return true;
    }

    void deliver(connection& c) {
        std::size_t start = 0;
        for (std::size_t nl; (nl = c.in.find('\n', start)) != std::string::npos; start = nl + 1) {
            std::string_view line(c.in.data() + start, nl - start);
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty()) continue;
            hist_.record(cfg_.id, c.no, "recv", line);
            json::error_code ec;
            auto v = json::parse(json::string_view(line.data(), line.size()), ec);
            if (!ec && v.is_object()) on_frame(c, v.get_object());
        }
        c.in.erase(0, start);
    }

    void flush(connection& c) {
        while (!c.out.empty()) {
            ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
            if (n > 0) {
                c.out.erase(0, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (n < 0 && errno == EINTR) continue;
            return;  // the read side reports the loss
        }
    }

    void send(connection& c, const json::object& m) { send_raw(c, json::serialize(m)); }

    void send_raw(connection& c, const std::string& frame) {
        hist_.record(cfg_.id, c.no, "send", frame);
        c.out += frame;
        c.out += '\n';
        board_->slots[cfg_.slot].ops.fetch_add(1, std::memory_order_relaxed);
        flush(c);
    }

    static std::string str(const json::object& o, std::string_view k) {
        auto* v = o.if_contains(k);
        return v && v->is_string() ? std::string(v->get_string()) : std::string();
    }
    static bool yes(const json::object& o, std::string_view k) {
        auto* v = o.if_contains(k);
        return v && v->is_bool() && v->get_bool();
    }

    void on_frame(connection& c, const json::object& m) {
        const std::string type = str(m, "type"), uuid = str(m, "uuid");
        if (type == "hello" && uuid == c.hello_id) {
            c.ready = true;
            return;
        }
        if (type == "lock-lost") {
            c.holds.erase(uuid);
            return;
        }
        if (type == "lock" || type == "acquire-many") {
            auto it = c.locks.find(uuid);
            if (it == c.locks.end()) return;
            if (yes(m, "queued") && !yes(m, "acquired") && !m.contains("error")) {
                it->second.queued = true;
                return;
            }
            pending_lock l = std::move(it->second);
            c.locks.erase(it);
            if (!yes(m, "acquired") || l.abandoned) return;  // an abandoned request's grant was given back
            c.holds[uuid] = hold{l.keys, l.multi};
            publish(uuid, l.multi ? "" : l.keys[0]);
            if (draining_) release(c, uuid);
            return;
        }
        auto call = c.calls.find(uuid);
        if (call == c.calls.end()) return;
        const std::string ctype = call->second;
        c.calls.erase(call);
        const std::string target = c.targets[uuid];
        c.targets.erase(uuid);
        if (ctype == "cancel" && yes(m, "cancelled")) c.locks.erase(target);
        if ((ctype == "unlock" || ctype == "release-many") && !target.empty()) {
            // An own request this released is gone: withdrawn while it waited, or released if its
            // grant crossed the unlock.
            c.locks.erase(target);
            c.holds.erase(target);
        }
    }

    std::string next_id() { return cfg_.id + "-" + std::to_string(++counter_); }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
    bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
    std::string key(int i) const { return cfg_.prefix + "k" + std::to_string(i); }
    static std::uint32_t max_of(int i) { return 1 + static_cast<std::uint32_t>(i % 3); }

    template <class Map>
    static auto random_entry(Map& m, std::mt19937_64& rng) {
        auto it = m.begin();
        std::advance(it, std::uniform_int_distribution<std::size_t>(0, m.size() - 1)(rng));
        return it;
    }

    json::value ttl_value() {
        if (chance(0.05)) return nullptr;  // no expiry
        if (chance(0.2)) return 1 + pick(50);
        return 50 + pick(950);
    }

    void lock(connection& c) {
        const int i = pick(cfg_.keys);
        std::string id = next_id();
        json::object m{{"type", "lock"}, {"uuid", id}, {"key", key(i)}, {"max", max_of(i)}, {"ttl", ttl_value()}};
        if (chance(0.25)) m["mode"] = "shared";
        if (chance(0.2))
            m["wait"] = false;
        else if (chance(0.7))
            m["timeout"] = 1 + pick(500);
        if (chance(0.1)) m["keepLocksOnExit"] = true;
        pending_lock l{{key(i)}, false, false, false, false, json::serialize(m)};
        c.locks[id] = l;
        publish_waiting(id, key(i));
        send_raw(c, l.frame);
    }

    void acquire_many(connection& c) {
        std::set<std::string> ks;
        const int n = 2 + pick(2);
        while (static_cast<int>(ks.size()) < std::min(n, cfg_.keys)) ks.insert(key(pick(cfg_.keys)));
        std::string id = next_id();
        json::array arr;
        for (auto& k : ks) arr.emplace_back(k);
        json::object m{{"type", "acquire-many"}, {"uuid", id}, {"keys", std::move(arr)}, {"ttl", ttl_value()}};
        if (chance(0.2))
            m["wait"] = false;
        else if (chance(0.7))
            m["timeout"] = 1 + pick(500);
        if (chance(0.1)) m["keepLocksOnExit"] = true;
        pending_lock l{{ks.begin(), ks.end()}, true, false, false, false, json::serialize(m)};
        c.locks[id] = l;
        publish_waiting(id, "");
        send_raw(c, l.frame);
    }

    void call(connection& c, json::object m, const std::string& target = {}) {
        std::string id = next_id();
        m["uuid"] = id;
        c.calls[id] = std::string(m["type"].as_string());
        if (!target.empty()) c.targets[id] = target;
        send(c, m);
    }

    void release(connection& c, const std::string& id) {
        auto it = c.holds.find(id);
        if (it == c.holds.end()) return;
        if (it->second.multi)
            call(c, {{"type", "release-many"}, {"lockUuid", id}}, id);
        else
            call(c, {{"type", "unlock"}, {"key", it->second.keys[0]}, {"_uuid", id}}, id);
        c.holds.erase(it);
    }

    // Everything this connection waits for or holds is withdrawn or released.
    void drain(connection& c) {
        if (c.fd < 0) return;
        std::vector<std::string> waiting;
        for (auto& [id, l] : c.locks)
            if (!l.abandoned && !l.withdrawing) waiting.push_back(id);
        std::erase_if(c.locks, [](auto& p) { return p.second.abandoned; });
        for (auto& id : waiting) call(c, {{"type", "cancel"}, {"target", id}}, id);
        std::vector<std::string> held;
        for (auto& [id, h] : c.holds) held.push_back(id);
        for (auto& id : held) release(c, id);
    }

    std::vector<std::string> waiting_ids(connection& c, bool single_only) {
        std::vector<std::string> out;
        for (auto& [id, l] : c.locks)
            if (l.queued && !l.abandoned && !l.withdrawing && (!single_only || !l.multi)) out.push_back(id);
        return out;
    }

    // Another client's live request id from the board: "s KEY ID" or "m ID".
    bool foreign(std::string& kind, std::string& k, std::string& id) {
        int active[max_workers];
        int n = 0;
        for (int i = 0; i < max_workers; ++i)
            if (i != cfg_.slot && board_->slots[i].ops.load(std::memory_order_relaxed) > 0) active[n++] = i;
        if (n == 0) return false;
        const int other = active[pick(n)];
        char buf[id_size];
        std::memcpy(buf, board_->slots[other].ids[pick(ids_per_worker)], id_size);
        buf[id_size - 1] = 0;
        std::string text(buf);
        for (char ch : text)
            if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.' || ch == ' ' || ch == '_'))
                return false;
        auto sp = text.find(' ');
        if (sp == std::string::npos) return false;
        kind = text.substr(0, sp);
        if (kind == "m") {
            id = text.substr(sp + 1);
            return !id.empty();
        }
        auto sp2 = text.find(' ', sp + 1);
        if (kind != "s" || sp2 == std::string::npos) return false;
        k = text.substr(sp + 1, sp2 - sp - 1);
        id = text.substr(sp2 + 1);
        return !id.empty() && k.starts_with(cfg_.prefix);
    }

    void issue(connection& c) {
        if (c.waiting() >= static_cast<std::size_t>(cfg_.depth)) return release(c, random_entry(c.holds, rng_)->first);
        const int r = pick(1000);
        std::string kind, k, id;
        if (r < 400) return lock(c);
        if (r < 470) return acquire_many(c);
        if (r < 640) {
            if (c.holds.empty()) return lock(c);
            return release(c, random_entry(c.holds, rng_)->first);
        }
        if (r < 690) {
            if (c.holds.empty()) return lock(c);
            auto it = random_entry(c.holds, rng_);
            const std::string& hk = it->second.keys[pick(static_cast<int>(it->second.keys.size()))];
            return call(c, {{"type", "extend"}, {"key", hk}, {"_uuid", it->first}, {"ttl", ttl_value()}}, it->first);
        }
        if (r < 740) {
            auto w = waiting_ids(c, false);
            if (w.empty()) return lock(c);
            const std::string& x = w[static_cast<std::size_t>(pick(static_cast<int>(w.size())))];
            c.locks[x].withdrawing = true;
            return call(c, {{"type", "cancel"}, {"target", x}}, x);
        }
        if (r < 760) {
            auto w = waiting_ids(c, true);
            if (w.empty()) return lock(c);
            const std::string& x = w[static_cast<std::size_t>(pick(static_cast<int>(w.size())))];
            c.locks[x].withdrawing = true;
            return call(c, {{"type", "unlock"}, {"key", c.locks[x].keys[0]}, {"_uuid", x}}, x);
        }
        if (r < 770) {
            auto w = waiting_ids(c, true);
            if (w.empty()) return lock(c);
            const std::string& x = w[static_cast<std::size_t>(pick(static_cast<int>(w.size())))];
            c.locks[x].abandoned = true;
            return send(c, {{"type", "lock-client-timeout"}, {"uuid", x}, {"key", c.locks[x].keys[0]}});
        }
        if (r < 790) {
            auto w = waiting_ids(c, false);
            if (w.empty()) return lock(c);
            return send_raw(c,
                            c.locks[w[static_cast<std::size_t>(pick(static_cast<int>(w.size())))]].frame);  // a retry
        }
        if (r < 880) {
            if (!foreign(kind, k, id)) return lock(c);
            if (kind == "m") return call(c, {{"type", "release-many"}, {"lockUuid", id}});
            return call(c, {{"type", "unlock"}, {"key", k}, {"_uuid", id}});
        }
        if (r < 890) {
            if (!foreign(kind, k, id) || kind != "s") return lock(c);
            return call(c, {{"type", "unlock"}, {"key", k}, {"_uuid", id}, {"force", true}});
        }
        if (r < 896) return call(c, {{"type", "unlock"}, {"key", key(pick(cfg_.keys))}, {"force", true}});
        if (r < 930) return call(c, {{"type", "lock-info-request"}, {"key", key(pick(cfg_.keys))}});
        if (r < 934) return drop(c, "closed");
        if (r < 938) return drop(c, "abort");
        return lock(c);
    }

    void publish_text(const std::string& text) {
        char* slot = board_->slots[cfg_.slot].ids[next_slot_++ % ids_per_worker];
        std::size_t n = std::min(text.size(), static_cast<std::size_t>(id_size - 1));
        std::memset(slot, 0, id_size);
        std::memcpy(slot, text.data(), n);
    }
    void publish(const std::string& id, const std::string& k) {
        publish_text(k.empty() ? "m " + id : "s " + k + " " + id);
    }
    void publish_waiting(const std::string& id, const std::string& k) {
        if (chance(0.3)) publish(id, k);
    }

    worker_config cfg_;
    history_file hist_;
    std::mt19937_64 rng_;
    board* board_ = nullptr;
    std::vector<std::unique_ptr<connection>> conns_;
    int sessions_ = 0;
    std::uint64_t counter_ = 0;
    std::int64_t retry_at_ = 0;
    unsigned next_slot_ = 0;
    bool draining_ = false;
};

}  // namespace

int run_worker(const worker_config& cfg) {
    worker w(cfg);
    return w.run();
}

}  // namespace lmx::check
