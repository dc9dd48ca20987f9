// NDJSON connections over TCP and Unix sockets, their listeners, and connect().

#include "detail.hpp"

#include <lmx/transport/line_buffer.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lmx::transport {

connection::~connection() = default;

const std::string& connection::upgrade_token() const {
    static const std::string none;
    return none;
}

asio::awaitable<boost::system::error_code> connection::goodbye(std::uint16_t, std::string_view) {
    co_return boost::system::error_code{};
}

std::string connection::peer() const {
    // "ip:port" or "[v6]:port": everything before the last colon.
    auto remote = remote_address();
    const auto colon = remote.rfind(':');
    return colon == std::string::npos ? remote : remote.substr(0, colon);
}
listener::~listener() = default;

namespace detail {
namespace {

using unix_protocol = asio::local::stream_protocol;
using unix_socket = asio::basic_stream_socket<unix_protocol, executor>;

error_code errno_code(int e) { return {e, boost::system::system_category()}; }

template <class Protocol>
class stream_connection final : public connection {
public:
    using socket_type = asio::basic_stream_socket<Protocol, executor>;

    stream_connection(socket_type socket, std::size_t max_message_size, endpoint::kind k, std::string remote)
        : socket_(std::move(socket)), buffer_(max_message_size), kind_(k), remote_(std::move(remote)) {}

    asio::awaitable<error_code> read(std::vector<std::string_view>& out) override {
        const auto before = out.size();
        for (;;) {
            if (auto ec = buffer_.take(out); ec || out.size() != before) co_return ec;
            const auto space = buffer_.prepare();
            auto [ec, n] = co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), use_tuple);
            if (ec) co_return ec;
            buffer_.commit(n);
        }
    }

    asio::awaitable<error_code> write(std::string_view batch) override {
        auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(batch.data(), batch.size()), use_tuple);
        co_return ec;
    }

    std::size_t write_now(std::string_view batch) noexcept override {
        error_code ec;
        if (!non_blocking_) {
            // Synchronous calls then fail with would_block instead of waiting; async I/O is unaffected.
            socket_.non_blocking(true, ec);
            if (ec) return 0;
            non_blocking_ = true;
        }
        const auto n = socket_.write_some(asio::buffer(batch.data(), batch.size()), ec);
        return ec ? 0 : n;
    }

    void close() noexcept override {
        error_code ignored;
        socket_.close(ignored);
    }

    asio::awaitable<error_code> goodbye(std::uint16_t, std::string_view) override {
        error_code ec;
        socket_.shutdown(socket_type::shutdown_send, ec);
        co_return ec;
    }

    const skipped_line* skipped() const noexcept override { return &buffer_.skipped(); }
    std::string remote_address() const override { return remote_; }
    std::string peer() const override {
        if constexpr (std::is_same_v<Protocol, tcp>) {
            return connection::peer();
        } else {
            const auto cred = credentials();
            return cred ? "uid " + std::to_string(cred->uid) : std::string("uid ?");
        }
    }
    std::optional<peer_credentials> credentials() const override {
        if constexpr (std::is_same_v<Protocol, tcp>) {
            return std::nullopt;
        } else {
            ucred cred{};
            socklen_t len = sizeof cred;
            if (::getsockopt(const_cast<socket_type&>(socket_).native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) !=
                0)
                return std::nullopt;
            return peer_credentials{static_cast<std::uint32_t>(cred.uid), static_cast<std::uint32_t>(cred.gid),
                                    static_cast<std::int32_t>(cred.pid)};
        }
    }
    endpoint::kind kind() const noexcept override { return kind_; }
    executor get_executor() override { return socket_.get_executor(); }

private:
    bool non_blocking_ = false;
    socket_type socket_;
    line_buffer buffer_;
    endpoint::kind kind_;
    std::string remote_;
};

std::string remote_of(const tcp_socket& socket) {
    error_code ec;
    const auto ep = socket.remote_endpoint(ec);
    return ec ? std::string("?") : format_address(ep);
}

std::unique_ptr<connection> make_tcp_connection(tcp_socket socket, std::size_t max_message_size, bool no_delay) {
    error_code ignored;
    if (no_delay) socket.set_option(tcp::no_delay(true), ignored);
    auto remote = remote_of(socket);
    return std::make_unique<stream_connection<tcp>>(std::move(socket), max_message_size, endpoint::kind::tcp,
                                                    std::move(remote));
}

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_now(executor ex, endpoint ep,
                                                                                connect_options options) {
    // A racing timeout must surface as an error code here, never as an exception.
    co_await asio::this_coro::throw_if_cancelled(false);
    switch (ep.scheme) {
        case endpoint::kind::tcp: {
            if (ep.tls) co_return co_await connect_tls(ex, std::move(ep), std::move(options));
            auto [ec, socket] = co_await connect_tcp(ex, ep, options.no_delay);
            if (ec) co_return std::pair{ec, std::unique_ptr<connection>()};
            co_return std::pair{error_code{}, make_tcp_connection(std::move(socket), options.max_message_size, false)};
        }
        case endpoint::kind::unix_socket: {
            if (ep.tls || ep.path.empty() || ep.path.size() >= sizeof(sockaddr_un::sun_path))
                co_return std::pair{error_code(error::invalid_endpoint), std::unique_ptr<connection>()};
            unix_socket socket(ex);
            auto [ec] = co_await socket.async_connect(unix_protocol::endpoint(ep.path), use_tuple);
            if (ec) co_return std::pair{ec, std::unique_ptr<connection>()};
            co_return std::pair{
                error_code{}, std::unique_ptr<connection>(std::make_unique<stream_connection<unix_protocol>>(
                                  std::move(socket), options.max_message_size, endpoint::kind::unix_socket, ep.path))};
        }
        case endpoint::kind::websocket: co_return co_await connect_websocket(ex, std::move(ep), std::move(options));
    }
    co_return std::pair{error_code(error::invalid_endpoint), std::unique_ptr<connection>()};
}

// A listener for tcp:// (Protocol = tcp) or unix:// (Protocol = local::stream_protocol).
template <class Protocol>
class stream_listener final : public listener {
public:
    using acceptor_type = asio::basic_socket_acceptor<Protocol, executor>;

    stream_listener(executor ex, listen_options options)
        : accept_(std::make_shared<accept_state<Protocol>>(ex)), options_(std::move(options)) {}
    ~stream_listener() override { close(); }

    acceptor_type& acceptor() { return accept_->acceptor; }
    void set_local(endpoint ep) { local_ = std::move(ep); }
    void own_file(const struct stat& st) {
        owns_file_ = true;
        dev_ = st.st_dev;
        ino_ = st.st_ino;
    }

    asio::awaitable<void> run(std::function<void(std::unique_ptr<connection>)> on_connection) override {
        // Copies: after the first suspension this listener may already be closed and destroyed.
        const auto max_message_size = options_.max_message_size;
        const bool no_delay = options_.no_delay;
        const auto keepalive = options_.keepalive;
        const std::string path = local_.path;
        auto accept = accept_;
        auto handle = [&](auto socket) {
            if constexpr (std::is_same_v<Protocol, tcp>) {
                set_keepalive(socket, keepalive);
                on_connection(make_tcp_connection(std::move(socket), max_message_size, no_delay));
            } else {
                on_connection(std::make_unique<stream_connection<Protocol>>(std::move(socket), max_message_size,
                                                                            endpoint::kind::unix_socket, path));
            }
        };
        co_await accept_loop(std::move(accept), std::move(handle));
    }

    void close() noexcept override {
        accept_->close();
        if (owns_file_) {
            owns_file_ = false;
            // Someone may have replaced the file since; only ours is removed.
            struct stat st {};
            if (::lstat(local_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
                ::unlink(local_.path.c_str());
        }
    }

    endpoint local_endpoint() const override { return local_; }

private:
    std::shared_ptr<accept_state<Protocol>> accept_;
    listen_options options_;
    endpoint local_;
    bool owns_file_ = false;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

// Is a process accepting on this socket file? Non-blocking, so a full backlog cannot hang us.
error_code probe_unix_socket(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_code(errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    const int err = rc == 0 ? 0 : errno;
    ::close(fd);
    return err == 0 ? error_code{} : errno_code(err);
}

std::unique_ptr<listener> open_unix_listener(executor ex, const endpoint& ep, listen_options options, error_code& ec,
                                             std::string& error_text) {
    const std::string& path = ep.path;
    const std::string where = to_string(ep);
    if (path.empty() || path.front() != '/' || path.size() >= sizeof(sockaddr_un::sun_path)) {
        ec = error::invalid_endpoint;
        error_text = "cannot listen on " + where + ": the socket path must be absolute and at most " +
                     std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes";
        return nullptr;
    }

    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            ec = error::not_a_socket;
            error_text = "cannot listen on " + where + ": '" + path + "' exists and is not a socket (left untouched)";
            return nullptr;
        }
        const auto probe = probe_unix_socket(path);
        if (!probe || probe == asio::error::would_block || probe == asio::error::try_again ||
            probe == asio::error::in_progress) {
            ec = asio::error::address_in_use;
            error_text = "a broker is already listening on " + where;
            return nullptr;
        }
        if (probe == asio::error::connection_refused) {
            // Left behind by a process that died without cleaning up: safe to replace.
            if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
                ec = errno_code(errno);
                error_text = "cannot remove the stale socket " + path + ": " + ec.message();
                return nullptr;
            }
        } else if (probe != asio::error::not_found && probe != errno_code(ENOENT)) {
            ec = probe;
            error_text = "cannot check whether " + where + " is in use: " + ec.message();
            return nullptr;
        }
    } else if (errno != ENOENT) {
        ec = errno_code(errno);
        error_text = "cannot listen on " + where + ": " + ec.message();
        return nullptr;
    }

    auto result = std::make_unique<stream_listener<unix_protocol>>(ex, options);
    auto& acceptor = result->acceptor();
    const unix_protocol::endpoint local(path);
    auto fail = [&](const char* what) -> std::unique_ptr<listener> {
        if (ec == asio::error::address_in_use)
            error_text = "a broker is already listening on " + where;
        else
            error_text = std::string(what) + " " + where + ": " + ec.message();
        return nullptr;
    };
    acceptor.open(local.protocol(), ec);
    if (ec) return fail("cannot open a socket for");
    acceptor.bind(local, ec);
    if (ec) return fail("cannot bind");
    if (::lstat(path.c_str(), &st) != 0) {
        ec = errno_code(errno);
        return fail("cannot stat the new socket of");
    }
    result->set_local(ep);
    result->own_file(st);  // from here on close() (and the destructor) removes the file
    if (::chmod(path.c_str(), static_cast<mode_t>(options.unix_mode)) != 0) {
        ec = errno_code(errno);
        return fail("cannot chmod the socket of");
    }
    acceptor.listen(options.backlog, ec);
    if (ec) return fail("cannot listen on");
    return result;
}

std::unique_ptr<listener> open_tcp_listener(executor ex, const endpoint& ep, listen_options options, error_code& ec,
                                            std::string& error_text) {
    auto result = std::make_unique<stream_listener<tcp>>(ex, options);
    if (!open_tcp_acceptor(result->acceptor(), ep, options, ec, error_text)) return nullptr;
    result->set_local(bound_endpoint(result->acceptor(), ep));
    return result;
}

}  // namespace

std::string format_address(const tcp::endpoint& ep) {
    const auto address = ep.address();
    std::string out = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
    out += ':';
    out += std::to_string(ep.port());
    return out;
}

asio::awaitable<std::pair<error_code, tcp_socket>> connect_tcp(executor ex, endpoint ep, bool no_delay) {
    const auto cancellation = co_await asio::this_coro::cancellation_state;
    tcp_socket socket(ex);
    error_code ec;
    const auto address = asio::ip::make_address(ep.host, ec);
    if (!ec) {
        std::tie(ec) = co_await socket.async_connect(tcp::endpoint(address, ep.port), use_tuple);
    } else {
        asio::ip::basic_resolver<tcp, executor> resolver(ex);
        auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port),
                                                              tcp::resolver::numeric_service, use_tuple);
        ec = rec;
        if (!ec && stop_requested(cancellation)) ec = asio::error::operation_aborted;
        if (!ec) std::tie(ec, std::ignore) = co_await asio::async_connect(socket, results, use_tuple);
    }
    if (!ec && stop_requested(cancellation)) ec = asio::error::operation_aborted;
    if (!ec && no_delay) socket.set_option(tcp::no_delay(true), ec);
    co_return std::pair{ec, std::move(socket)};
}

bool open_tcp_acceptor(tcp_acceptor& acceptor, const endpoint& ep, const listen_options& options, error_code& ec,
                       std::string& error_text) {
    const std::string where = to_string(ep);
    tcp::endpoint local;
    if (const auto address = asio::ip::make_address(ep.host, ec); !ec) {
        local = tcp::endpoint(address, ep.port);
    } else {
        asio::ip::basic_resolver<tcp, executor> resolver(acceptor.get_executor());
        const auto results = resolver.resolve(ep.host, std::to_string(ep.port),
                                              tcp::resolver::passive | tcp::resolver::numeric_service, ec);
        if (ec || results.empty()) {
            if (!ec) ec = asio::error::host_not_found;
            error_text = "cannot listen on " + where + ": cannot resolve '" + ep.host + "': " + ec.message();
            return false;
        }
        // "localhost" usually yields ::1 and 127.0.0.1; most tools expect the IPv4 one.
        local = results.begin()->endpoint();
        for (const auto& entry : results) {
            if (entry.endpoint().address().is_v4()) {
                local = entry.endpoint();
                break;
            }
        }
    }

    auto fail = [&](const std::string& text) {
        error_code ignored;
        acceptor.close(ignored);
        error_text = text;
        return false;
    };
    acceptor.open(local.protocol(), ec);
    if (ec) return fail("cannot open a socket for " + where + ": " + ec.message());
    // Lets a restarted broker bind while old connections sit in TIME_WAIT; a live listener still conflicts.
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    acceptor.bind(local, ec);
    if (ec) {
        if (ec == asio::error::address_in_use)
            return fail("cannot listen on " + where + ": port " + std::to_string(ep.port) +
                        " is already in use (is another broker running?)");
        if (ec == asio::error::access_denied)
            return fail("cannot listen on " + where + ": permission denied (ports below 1024 need privileges)");
        if (ec == boost::system::errc::address_not_available)
            return fail("cannot listen on " + where + ": " + ep.host + " is not an address of this machine");
        return fail("cannot bind " + where + ": " + ec.message());
    }
    acceptor.listen(options.backlog, ec);
    if (ec) return fail("cannot listen on " + where + ": " + ec.message());
    return true;
}

endpoint bound_endpoint(const tcp_acceptor& acceptor, const endpoint& requested) {
    endpoint out = requested;
    error_code ec;
    const auto local = acceptor.local_endpoint(ec);
    if (!ec) {
        out.host = local.address().to_string();
        out.port = local.port();
    }
    return out;
}

void set_keepalive(tcp_socket& socket, std::chrono::seconds idle) noexcept {
    if (idle.count() <= 0) return;
    error_code ec;
    socket.set_option(asio::socket_base::keep_alive(true), ec);
    if (ec) return;
    const int fd = socket.native_handle();
    const int idle_s = static_cast<int>(std::min<std::chrono::seconds::rep>(idle.count(), 32767));
    const int interval = 10, probes = 6;
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

bool admit_handshake(tcp_socket& socket, const listen_options& options, std::size_t& handshakes,
                     std::string_view refusal) {
    error_code ignored;
    if (handshakes >= options.max_handshakes) {
        socket.close(ignored);
        if (options.on_error) options.on_error(std::string(refusal));
        return false;
    }
    ++handshakes;
    if (options.no_delay) socket.set_option(tcp::no_delay(true), ignored);
    set_keepalive(socket, options.keepalive);
    return true;
}

std::chrono::milliseconds accept_backoff(const error_code& ec) noexcept {
    using std::chrono::milliseconds;
    // The peer gave up before we accepted: nothing is wrong with the listener.
    if (ec == asio::error::connection_aborted || ec == asio::error::try_again || ec == asio::error::would_block)
        return milliseconds(0);
    if (ec == asio::error::no_descriptors || ec == errno_code(ENFILE) || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory)
        return milliseconds(100);
    return milliseconds(10);
}

}  // namespace detail

std::unique_ptr<listener> listener::open(executor ex, const endpoint& ep, listen_options options,
                                         boost::system::error_code& ec, std::string& error_text) {
    ec.clear();
    error_text.clear();
    switch (ep.scheme) {
        case endpoint::kind::tcp:
            if (ep.tls) return detail::open_tls_listener(std::move(ex), ep, std::move(options), ec, error_text);
            return detail::open_tcp_listener(std::move(ex), ep, std::move(options), ec, error_text);
        case endpoint::kind::unix_socket:
            if (ep.tls) {
                ec = error::invalid_endpoint;
                error_text = "cannot listen on " + to_string(ep) + ": TLS is for tls:// and wss://, not Unix sockets";
                return nullptr;
            }
            return detail::open_unix_listener(std::move(ex), ep, std::move(options), ec, error_text);
        case endpoint::kind::websocket:
            return detail::open_websocket_listener(std::move(ex), ep, std::move(options), ec, error_text);
    }
    ec = error::invalid_endpoint;
    error_text = "unknown endpoint kind";
    return nullptr;
}

asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<connection>>> connect(executor ex, endpoint ep,
                                                                                           connect_options options) {
    // The caller's strings need only live until here (see tls_client_files); these outlive every
    // step below, which all finish before this coroutine does.
    const std::string ca_file(options.tls.ca_file), cert_file(options.tls.cert_file), key_file(options.tls.key_file);
    options.tls = {ca_file, cert_file, key_file};
    if (options.timeout.count() <= 0) co_return co_await detail::connect_now(std::move(ex), std::move(ep), options);
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timer(ex, options.timeout);
    auto result = co_await (detail::connect_now(ex, std::move(ep), options) || timer.async_wait(detail::use_tuple));
    if (result.index() == 1)
        co_return std::pair{boost::system::error_code(asio::error::timed_out), std::unique_ptr<connection>()};
    co_return std::move(std::get<0>(result));
}

}  // namespace lmx::transport
