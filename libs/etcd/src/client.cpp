#include <lmx/etcd/client.hpp>

#include "gateway.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <charconv>

namespace lmx::etcd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace {
constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_answer = 64u << 20;
constexpr std::size_t max_idle = 8;
constexpr int grpc_not_found = 5;
constexpr int grpc_unavailable = 14;

struct peer {
    std::string host;
    std::string port;
    bool tls = false;
    std::string name() const { return (host.find(':') == std::string::npos ? host : "[" + host + "]") + ":" + port; }
};

peer parse_endpoint(std::string_view text) {
    const std::string given(text);
    const bool tls = text.starts_with("https://");
    if (tls)
        text.remove_prefix(8);
    else if (text.starts_with("http://"))
        text.remove_prefix(7);
    else if (text.find("://") != std::string_view::npos)
        throw std::invalid_argument("etcd endpoint " + given + ": expected http:// or https://");
    while (text.ends_with('/')) text.remove_suffix(1);
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
        throw std::invalid_argument("etcd endpoint " + given + ": expected host:port");
    auto host = text.substr(0, colon);
    const auto port = text.substr(colon + 1);
    unsigned n = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || n == 0 || n > 65535)
        throw std::invalid_argument("etcd endpoint " + given + ": the port must be 1 to 65535");
    if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
    return {std::string(host), std::string(port), tls};
}

using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// One connection to a member: plain TCP, or TLS over it.
struct link {
    std::unique_ptr<beast::tcp_stream> plain;
    std::unique_ptr<tls_stream> secure;

    explicit operator bool() const { return plain || secure; }
    beast::tcp_stream& tcp() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
    // Calls `op` with the stream to read and write (`op` returns the same type for both).
    template <class Op>
    auto use(Op&& op) {
        return secure ? op(*secure) : op(*plain);
    }
};

std::shared_ptr<asio::ssl::context> make_tls_context(const options& o) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    ctx->set_verify_mode(asio::ssl::verify_peer);
    boost::system::error_code ec;
    if (o.ca_file.empty())
        ctx->set_default_verify_paths(ec);
    else
        ctx->load_verify_file(o.ca_file, ec);
    if (ec) throw std::invalid_argument("etcd: cannot load the CA file " + o.ca_file + ": " + ec.message());
    if (o.cert_file.empty() != o.key_file.empty())
        throw std::invalid_argument("etcd: a client certificate needs both its certificate and its key file");
    if (!o.cert_file.empty()) {
        ctx->use_certificate_chain_file(o.cert_file, ec);
        if (ec) throw std::invalid_argument("etcd: cannot load the certificate " + o.cert_file + ": " + ec.message());
        ctx->use_private_key_file(o.key_file, asio::ssl::context::pem, ec);
        if (ec) throw std::invalid_argument("etcd: cannot load the key " + o.key_file + ": " + ec.message());
    }
    return ctx;
}

// Before the handshake: the member's certificate must name `host` (a DNS name, sent as SNI too,
// or an IP address).
void expect_host(tls_stream& s, const std::string& host) {
    SSL* ssl = s.native_handle();
    boost::system::error_code not_ip;
    asio::ip::make_address(host, not_ip);
    if (!not_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
        return;
    }
    X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl, host.c_str());
    SSL_set_tlsext_host_name(ssl, host.c_str());
}

json::string number(std::int64_t n) { return json::string(std::to_string(n)); }

json::object parse_object(std::string_view body) {
    boost::system::error_code ec;
    auto v = json::parse(body, ec);
    if (ec || !v.is_object()) throw error(error::kind::bad_reply, 0, "etcd: an answer that is not a JSON object");
    return std::move(v.get_object());
}

// A kept-alive connection whose peer has closed it (etcd restarted, say) is not reused: a request
// sent on it would end with its outcome unknown. (Bytes waiting are fine: TLS 1.3 servers send
// session tickets after the handshake.)
bool still_open(link& l) {
    char c = 0;
    const auto n = ::recv(l.tcp().socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

void add_failure(std::string& all, const std::string& one) {
    if (!all.empty()) all += "; ";
    all += one;
}
}  // namespace

struct client::impl {
    asio::any_io_executor ex;
    options opt;
    std::vector<peer> eps;
    std::size_t current = 0;
    std::vector<link> idle;                   // kept alive, to eps[current]
    std::shared_ptr<asio::ssl::context> tls;  // for https:// endpoints

    void next_endpoint() {
        current = (current + 1) % eps.size();
        idle.clear();
    }

    // Endpoint `at` failed a call: the next call goes to the one after it, unless a call running
    // beside this one has moved on already (two failures must not skip a live endpoint).
    void failed_at(std::size_t at) {
        if (current == at) next_endpoint();
    }

    // A connection to endpoint `at` that may carry the next call.
    void keep(link s, std::size_t at) {
        if (current == at && idle.size() < max_idle) idle.push_back(std::move(s));
    }

    asio::awaitable<link> connect(const peer& ep, std::string& why) {
        tcp::resolver resolver(ex);
        auto [rec, results] = co_await resolver.async_resolve(ep.host, ep.port, tuple);
        if (rec) {
            why = ep.name() + ": " + rec.message();
            co_return link{};
        }
        auto s = std::make_unique<beast::tcp_stream>(ex);
        s->expires_after(opt.connect_timeout);
        auto [cec, at] = co_await s->async_connect(results, tuple);
        if (cec) {
            why = ep.name() + ": " + (cec == beast::error::timeout ? std::string("connect timed out") : cec.message());
            co_return link{};
        }
        boost::system::error_code ignored;
        s->socket().set_option(tcp::no_delay(true), ignored);
        if (!ep.tls) co_return link{std::move(s), nullptr};
        auto t = std::make_unique<tls_stream>(std::move(*s), *tls);
        expect_host(*t, ep.host);
        auto [hec] = co_await t->async_handshake(asio::ssl::stream_base::client, tuple);
        if (hec) {
            why = ep.name() +
                  ": TLS handshake: " + (hec == beast::error::timeout ? std::string("timed out") : hec.message());
            co_return link{};
        }
        co_return link{nullptr, std::move(t)};
    }

    static http::request<http::string_body> post(const peer& ep, std::string_view target, std::string body) {
        http::request<http::string_body> req{http::verb::post, target, 11};
        req.set(http::field::host, ep.name());
        req.set(http::field::content_type, "application/json");
        req.keep_alive(true);
        req.body() = std::move(body);
        req.prepare_payload();
        return req;
    }

    // One POST, answered. Endpoints that cannot be reached are skipped. A request that went out
    // whole and then lost its connection (or met an unavailable member) is sent again elsewhere
    // only when `resend_safe`.
    asio::awaitable<json::object> call(std::string_view target, std::string body, bool resend_safe) {
        std::string failures;
        for (std::size_t tried = 0; tried < eps.size();) {
            const auto at = current;
            const auto ep = eps[at];
            link s;
            while (!idle.empty() && !s) {
                s = std::move(idle.back());
                idle.pop_back();
                if (!still_open(s)) s = link{};
            }
            const bool reused = static_cast<bool>(s);
            if (!reused) {
                std::string why;
                s = co_await connect(ep, why);
                if (!s) {
                    add_failure(failures, why);
                    failed_at(at);
                    ++tried;
                    continue;
                }
            }
            auto req = post(ep, target, body);
            s.tcp().expires_after(opt.request_timeout);
            // A failed write left part of the request unsent, so etcd cannot have acted on it.
            auto [wec, written] = co_await s.use([&](auto& stream) { return http::async_write(stream, req, tuple); });
            if (wec) {
                if (!reused) {
                    add_failure(failures, ep.name() + ": " + wec.message());
                    failed_at(at);
                    ++tried;
                }
                continue;  // a kept-alive connection that had closed: a fresh one to the same endpoint
            }
            beast::flat_buffer buf;
            http::response_parser<http::string_body> parser;
            parser.body_limit(max_answer);
            auto [rec, read] =
                co_await s.use([&](auto& stream) { return http::async_read(stream, buf, parser, tuple); });
            if (rec && reused && resend_safe) continue;  // a fresh connection to the same endpoint
            if (rec) {
                const auto why =
                    ep.name() + ": " + (rec == beast::error::timeout ? "no answer in time" : rec.message());
                // With TLS 1.3 a member refuses the client's certificate after the client has
                // finished its handshake: the alert arrives instead of the first answer, and the
                // request was never read.
                const bool refused_handshake = !reused && rec.category() == asio::error::get_ssl_category();
                if (!resend_safe && !refused_handshake)
                    throw error(error::kind::outcome_unknown, 0,
                                "etcd: the connection to " + why + " after the request went out");
                add_failure(failures, refused_handshake ? ep.name() + ": TLS handshake: " + rec.message() : why);
                failed_at(at);
                ++tried;
                continue;
            }
            auto res = parser.release();
            if (res.result() != http::status::ok) {
                boost::system::error_code pec;
                const auto v = json::parse(res.body(), pec);
                auto e = gateway::read_error(pec ? json::value() : v, res.result_int());
                if (e.code() == grpc_unavailable && resend_safe) {
                    add_failure(failures, ep.name() + ": " + e.what());
                    failed_at(at);
                    ++tried;
                    continue;
                }
                if (res.keep_alive()) keep(std::move(s), at);
                throw e;
            }
            auto answer = parse_object(res.body());
            if (res.keep_alive()) keep(std::move(s), at);
            co_return answer;
        }
        throw error(error::kind::unreachable, 0, "etcd: no endpoint answered (" + failures + ")");
    }
};

struct watch_stream::impl {
    link s;
    std::string endpoint;
    beast::flat_buffer buf;
    http::response_parser<http::buffer_body> parser;
    std::array<char, 16384> chunk{};
    std::string pending;
    bool over = false;
};

watch_stream::watch_stream(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
watch_stream::watch_stream(watch_stream&&) noexcept = default;
watch_stream& watch_stream::operator=(watch_stream&&) noexcept = default;
watch_stream::~watch_stream() { close(); }

void watch_stream::close() {
    if (!impl_ || !impl_->s) return;
    boost::system::error_code ignored;
    impl_->s.tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    impl_->s.tcp().socket().close(ignored);
    impl_->over = true;
}

asio::awaitable<watch_batch> watch_stream::next() {
    impl& w = *impl_;
    for (;;) {
        if (const auto nl = w.pending.find('\n'); nl != std::string::npos) {
            const auto line = w.pending.substr(0, nl);
            w.pending.erase(0, nl + 1);
            if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
            auto batch = gateway::read_watch(parse_object(line));
            if (batch.canceled) w.over = true;
            co_return batch;
        }
        if (w.over || w.parser.is_done())
            throw error(error::kind::unreachable, 0, "etcd: the watch stream from " + w.endpoint + " is over");
        auto& body = w.parser.get().body();
        body.data = w.chunk.data();
        body.size = w.chunk.size();
        auto [ec, n] =
            co_await w.s.use([&](auto& stream) { return http::async_read_some(stream, w.buf, w.parser, tuple); });
        if (ec == http::error::need_buffer) ec = {};
        if (ec) {
            w.over = true;
            throw error(error::kind::unreachable, 0,
                        "etcd: the watch stream from " + w.endpoint + " broke: " + ec.message());
        }
        w.pending.append(w.chunk.data(), w.chunk.size() - body.size);
    }
}

client::client(asio::any_io_executor ex, options o) : impl_(std::make_shared<impl>()) {
    if (o.endpoints.empty()) throw std::invalid_argument("etcd: no endpoint given");
    bool any_tls = false;
    for (const auto& e : o.endpoints) {
        impl_->eps.push_back(parse_endpoint(e));
        any_tls = any_tls || impl_->eps.back().tls;
    }
    if (any_tls)
        impl_->tls = make_tls_context(o);
    else if (!o.ca_file.empty() || !o.cert_file.empty() || !o.key_file.empty())
        throw std::invalid_argument("etcd: TLS files given, but no endpoint is https://");
    impl_->ex = std::move(ex);
    impl_->opt = std::move(o);
}

client::~client() = default;

std::string client::endpoint() const { return impl_->eps[impl_->current].name(); }

namespace {
// The answer of one call, read by `read`. The public calls are plain functions that build the
// request body before they return, so that their arguments may be temporaries of the caller's
// co_await expression; only the body and the reader reach this coroutine.
template <class T>
asio::awaitable<T> answer(std::shared_ptr<client::impl> i, std::string_view target, std::string body, bool resend_safe,
                          T (*read)(const json::object&)) {
    const auto a = co_await i->call(target, std::move(body), resend_safe);
    co_return read(a);
}

std::string id_body(std::string_view field, std::int64_t n) {
    json::object b;
    b[field] = number(n);
    return json::serialize(b);
}

lease read_grant(const json::object& a) {
    if (const auto* e = a.if_contains("error"); e && e->is_string() && !e->get_string().empty())
        throw error(error::kind::refused, 0, "etcd: " + std::string(e->get_string()));
    return {gateway::read_int(a, "ID"), std::chrono::seconds(gateway::read_int(a, "TTL"))};
}

std::chrono::seconds read_keepalive(const json::object& a) {
    const auto* result = a.if_contains("result");
    if (!result || !result->is_object()) throw error(error::kind::bad_reply, 0, "etcd: a keepalive without a result");
    return std::chrono::seconds(gateway::read_int(result->get_object(), "TTL"));
}

std::int64_t read_deleted(const json::object& a) { return gateway::read_int(a, "deleted"); }

asio::awaitable<void> revoke(std::shared_ptr<client::impl> i, std::string body) {
    try {
        co_await i->call("/v3/lease/revoke", std::move(body), true);
    } catch (const error& e) {
        if (e.which() != error::kind::refused || e.code() != grpc_not_found) throw;
    }
}

asio::awaitable<void> compact_to(std::shared_ptr<client::impl> i, std::string body) {
    co_await i->call("/v3/kv/compaction", std::move(body), false);
}
}  // namespace

asio::awaitable<lease> client::grant_lease(std::chrono::seconds ttl) {
    return answer(impl_, "/v3/lease/grant", id_body("TTL", ttl.count()), true, read_grant);
}

asio::awaitable<std::chrono::seconds> client::keep_alive(std::int64_t lease_id) {
    return answer(impl_, "/v3/lease/keepalive", id_body("ID", lease_id), true, read_keepalive);
}

asio::awaitable<void> client::revoke_lease(std::int64_t lease_id) { return revoke(impl_, id_body("ID", lease_id)); }

asio::awaitable<std::int64_t> client::put(std::string_view key, std::string_view value, std::int64_t lease) {
    auto body = gateway::put_body(put_op{std::string(key), std::string(value), lease});
    return answer(impl_, "/v3/kv/put", std::move(body), false, gateway::read_revision);
}

asio::awaitable<range_result> client::range(std::string_view key, range_options o) {
    return answer(impl_, "/v3/kv/range", gateway::range_body(std::string(key), o), true, gateway::read_range);
}

asio::awaitable<std::int64_t> client::delete_range(std::string_view key, std::string_view range_end) {
    auto body = gateway::delete_body(delete_op{std::string(key), std::string(range_end)});
    return answer(impl_, "/v3/kv/deleterange", std::move(body), false, read_deleted);
}

asio::awaitable<txn_result> client::txn(const txn_request& t) {
    return answer(impl_, "/v3/kv/txn", gateway::txn_body(t), false, gateway::read_txn);
}

asio::awaitable<void> client::compact(std::int64_t revision) {
    json::object b;
    b["revision"] = number(revision);
    b["physical"] = true;  // answered once the old revisions are gone
    return compact_to(impl_, json::serialize(b));
}

namespace {
asio::awaitable<watch_stream> open_watch(std::shared_ptr<client::impl> i, std::string body) {
    std::string failures;
    for (std::size_t tried = 0; tried < i->eps.size(); ++tried) {
        const auto at = i->current;
        const auto ep = i->eps[at];
        std::string why;
        auto s = co_await i->connect(ep, why);
        if (!s) {
            add_failure(failures, why);
            i->failed_at(at);
            continue;
        }
        auto w = std::make_unique<watch_stream::impl>();
        w->endpoint = ep.name();
        // The stream is one answer that never ends: no bound on its body (8 MB by default).
        w->parser.body_limit(boost::none);
        auto req = client::impl::post(ep, "/v3/watch", body);
        s.tcp().expires_after(i->opt.request_timeout);
        auto [wec, written] = co_await s.use([&](auto& stream) { return http::async_write(stream, req, tuple); });
        if (!wec)
            std::tie(wec, std::ignore) =
                co_await s.use([&](auto& stream) { return http::async_read_header(stream, w->buf, w->parser, tuple); });
        if (wec) {
            add_failure(failures, ep.name() + ": " + wec.message());
            i->failed_at(at);
            continue;
        }
        if (w->parser.get().result() != http::status::ok)
            throw error(
                error::kind::refused, 0,
                "etcd: " + ep.name() + " refused the watch with HTTP " + std::to_string(w->parser.get().result_int()));
        s.tcp().expires_never();
        w->s = std::move(s);
        co_return watch_stream(std::move(w));
    }
    throw error(error::kind::unreachable, 0, "etcd: no endpoint answered (" + failures + ")");
}
}  // namespace

asio::awaitable<watch_stream> client::watch(std::string_view key, std::string_view range_end,
                                            std::int64_t start_revision) {
    return open_watch(impl_, gateway::watch_body(std::string(key), std::string(range_end), start_revision));
}

std::string prefix_end(std::string_view prefix) {
    std::string end(prefix);
    while (!end.empty()) {
        auto& last = reinterpret_cast<unsigned char&>(end.back());
        if (last < 0xff) {
            ++last;
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0');
}

}  // namespace lmx::etcd
