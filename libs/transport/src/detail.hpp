#pragma once

// Private to libs/transport: shared by the stream (tcp/unix) and WebSocket sources.

#include <lmx/transport/connection.hpp>
#include <lmx/transport/listener.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace lmx::transport::detail {

using boost::system::error_code;
using tcp = asio::ip::tcp;
using tcp_socket = asio::basic_stream_socket<tcp, executor>;
using tcp_acceptor = asio::basic_socket_acceptor<tcp, executor>;

// Hot paths report errors as values; exceptions stay for the truly exceptional.
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// "1.2.3.4:80" or "[::1]:80".
std::string format_address(const tcp::endpoint& ep);

// True once the coroutine owning `state` was asked to stop (e.g. by a timeout racing it).
// A plain call: g++ 12 mishandles co_await inside && and ?: expressions.
inline bool stop_requested(const asio::cancellation_state& state) noexcept {
    return state.cancelled() != asio::cancellation_type::none;
}

// Resolves (numeric hosts skip the resolver) and connects a TCP socket on `ex`.
asio::awaitable<std::pair<error_code, tcp_socket>> connect_tcp(executor ex, endpoint ep, bool no_delay);

// Binds and listens for a tcp://, tls://, ws:// or wss:// endpoint; false with `ec` and a sentence on failure.
bool open_tcp_acceptor(tcp_acceptor& acceptor, const endpoint& ep, const listen_options& options, error_code& ec,
                       std::string& error_text);

// The endpoint a bound acceptor really listens on (actual port for port 0).
endpoint bound_endpoint(const tcp_acceptor& acceptor, const endpoint& requested);

// TCP keepalive as listen_options::keepalive describes; best effort.
void set_keepalive(tcp_socket& socket, std::chrono::seconds idle) noexcept;

// Admission to a listener's handshake phase (TLS, HTTP): when `handshakes` already reaches
// options.max_handshakes the socket is closed and on_error hears `refusal` (slow or idle peers
// cannot hold every slot: the newest is turned away at once). Otherwise counts it in `handshakes`
// (the caller counts it down when the handshake ends) and applies no_delay and keepalive.
bool admit_handshake(tcp_socket& socket, const listen_options& options, std::size_t& handshakes,
                     std::string_view refusal);

// Pause before accepting again after `ec`; zero: at once. Out of descriptors or memory
// would otherwise spin the loop at full speed while nothing can be accepted.
std::chrono::milliseconds accept_backoff(const error_code& ec) noexcept;

// The accepting half of a listener, shared with its run() coroutine so that a listener may be
// closed and destroyed while run() is still suspended.
template <class Protocol>
struct accept_state {
    explicit accept_state(executor ex) : acceptor(ex), backoff(ex) {}

    void close() noexcept {
        closed = true;
        error_code ignored;
        acceptor.close(ignored);
        backoff.cancel();
    }

    asio::basic_socket_acceptor<Protocol, executor> acceptor;
    asio::steady_timer backoff;
    bool closed = false;
};

// Runs `handle(socket)` for every accepted socket until the state is closed.
template <class Protocol, class Handler>
asio::awaitable<void> accept_loop(std::shared_ptr<accept_state<Protocol>> state, Handler handle) {
    for (;;) {
        auto [ec, socket] = co_await state->acceptor.async_accept(use_tuple);
        if (state->closed || ec == asio::error::operation_aborted) co_return;
        if (ec) {
            if (const auto delay = accept_backoff(ec); delay.count() > 0) {
                state->backoff.expires_after(delay);
                co_await state->backoff.async_wait(use_tuple);
            }
            continue;
        }
        handle(std::move(socket));
    }
}

std::unique_ptr<listener> open_websocket_listener(executor ex, const endpoint& ep, listen_options options,
                                                  error_code& ec, std::string& error_text);

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_websocket(executor ex, endpoint ep,
                                                                                      connect_options options);

// tls:// (tls.cpp); wss:// goes through the two above.
std::unique_ptr<listener> open_tls_listener(executor ex, const endpoint& ep, listen_options options, error_code& ec,
                                            std::string& error_text);

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_tls(executor ex, endpoint ep,
                                                                                connect_options options);

}  // namespace lmx::transport::detail
