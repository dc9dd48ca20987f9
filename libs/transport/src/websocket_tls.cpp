// wss://: the TLS halves of the WebSocket listener and client (the rest is websocket.cpp).

#include "websocket_session.hpp"

#include <string>

namespace lmx::transport::detail::ws {

asio::awaitable<void> serve_secure(std::shared_ptr<listener_state> state, tcp_socket socket) {
    error_code ignored;
    const auto peer = socket.remote_endpoint(ignored);
    const std::string remote = ignored ? std::string("?") : format_address(peer);
    secure_stream stream(plain_stream(std::move(socket)), *state->tls);
    pending_session registration(*state, beast::get_lowest_layer(stream));
    beast::get_lowest_layer(stream).expires_after(state->options.handshake_timeout);
    auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
    if (state->closed) co_return;
    if (ec) {
        if (state->options.on_error) {
            state->options.on_error(
                "TLS handshake with " + remote + " failed: " +
                (ec == beast::error::timeout
                     ? "no handshake within " + std::to_string(state->options.handshake_timeout.count()) + " ms"
                     : server_handshake_failure(ec, stream.native_handle())));
        }
        co_return;
    }
    co_await serve_http(state, stream);
}

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_secure(
    tcp_socket socket, tls_context_ptr context, const endpoint& ep, std::size_t max_message_size,
    const asio::cancellation_state& cancellation) {
    secure_stream tls(plain_stream(std::move(socket)), *context);
    if (auto pec = prepare_client(tls.native_handle(), ep.host))
        co_return std::pair{pec, std::unique_ptr<connection>()};
    auto [tec] = co_await tls.async_handshake(asio::ssl::stream_base::client, use_tuple);
    if (!tec && stop_requested(cancellation)) tec = asio::error::operation_aborted;
    if (tec) co_return std::pair{client_handshake_error(tec, tls.native_handle()), std::unique_ptr<connection>()};
    co_return co_await upgrade(std::move(tls), ep, max_message_size, std::move(context), cancellation);
}

}  // namespace lmx::transport::detail::ws
