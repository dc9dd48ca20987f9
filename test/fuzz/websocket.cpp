// WebSocket message handling: the fuzzed bytes are the client side of a connection to a server
// set up like the ws:// listener's (libs/transport/src/websocket_session.hpp): HTTP requests until
// an upgrade on "/" or "/ws", answered by Beast, then the frames read by our frame_reader
// (ws_frames.hpp) as the connection reads them. Every message read goes through
// request_parser::parse and is answered, as a broker session would; every message, framed again
// as a client would, must read back unchanged.
//
// Input: [flags][read size][message limit][http length: 2 bytes, big-endian][http bytes][frames].
// The frames reach the stream only after the upgrade: RFC 6455 clients wait for the 101.
// Beast's test stream stands in for the socket; it never blocks, and ends in EOF.

#include "fuzz_support.hpp"
#include "ws_frames.hpp"

#include <lmx/core/protocol.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ws = lmx::transport::detail::ws;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t http_body_limit = 64 * 1024;  // as the listener

struct connection_input {
    std::string_view http;
    std::string_view frames;
    std::size_t read_size = 0;  // 0: unlimited
    std::size_t write_size = 0;
    std::size_t max_message_size = 64 * 1024;
};

connection_input split(std::string_view in) {
    auto take = [&] {
        const auto b = in.empty() ? 0u : static_cast<unsigned char>(in.front());
        if (!in.empty()) in.remove_prefix(1);
        return b;
    };
    connection_input c;
    const unsigned flags = take();
    const unsigned read = take();
    const unsigned limit = take();
    // Mostly unlimited reads and writes (the common case); sometimes split byte by byte.
    c.read_size = (flags & 1u) ? 1 + read % 32 : 0;
    c.write_size = (flags & 2u) ? 1 + read / 32 : 0;
    c.max_message_size = (flags & 8u) ? 1 + limit : 64 * 1024;  // Beast reads 0 as no limit
    const std::size_t http_length = take() << 8 | take();
    c.http = in.substr(0, http_length);
    c.frames = in.substr(c.http.size());
    return c;
}

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

asio::awaitable<void> send_plain(beast::test::stream& stream, unsigned version, bool keep_alive, http::status status) {
    http::response<http::string_body> res{status, version};
    res.set(http::field::server, "lmx");
    res.keep_alive(keep_alive);
    res.body() = "not found\n";
    res.prepare_payload();
    co_await http::async_write(stream, res, use_tuple);
}

// What the connection does with frames (libs/transport/src/websocket_session.hpp): read chunks into
// a frame_reader, serve every message, answer with one write of all reply frames.
asio::awaitable<void> serve_websocket(beast::test::stream& stream, const connection_input& in,
                                      lmx::core::request_parser& parser) {
    ws::frame_reader reader(true, in.max_message_size);
    std::vector<std::string_view> messages;
    std::vector<ws::control_frame> controls;
    std::string replies, reply;
    for (;;) {
        reader.release();
        messages.clear();
        controls.clear();
        const auto status = reader.parse(messages, controls);
        replies.clear();
        for (const auto& c : controls) {
            LMX_FUZZ_CHECK(c.payload.size() <= 125);
            LMX_FUZZ_CHECK(c.op == ws::opcode::ping || c.op == ws::opcode::close);
            ws::append_frame(replies, c.op == ws::opcode::ping ? ws::opcode::pong : ws::opcode::close, c.payload);
        }
        for (const auto text : messages) {
            LMX_FUZZ_CHECK(!text.empty());
            LMX_FUZZ_CHECK(text.size() <= in.max_message_size);
            // What a client frames, a server reads back unchanged (binary: any bytes may travel).
            {
                std::string wire;
                ws::append_frame(wire, ws::opcode::binary, text, true, ws::random_mask_key());
                ws::frame_reader again(true, in.max_message_size);
                again.append(wire);
                std::vector<std::string_view> back;
                std::vector<ws::control_frame> none;
                LMX_FUZZ_CHECK(again.parse(back, none) == ws::read_status::more);
                LMX_FUZZ_CHECK(back.size() == 1 && back[0] == text && none.empty());
            }
            reply.clear();
            if (const auto r = parser.parse(text); r.ok())
                lmx::core::encode_request(r.value(), reply);
            else
                lmx::core::write_error(reply, r.error());
            LMX_FUZZ_CHECK(lmx::fuzz::one_line(reply));
            ws::append_text_frames(replies, reply, false);
        }
        if (!replies.empty()) {
            auto [wec, written] = co_await asio::async_write(stream, asio::buffer(replies), use_tuple);
            if (wec) co_return;
            LMX_FUZZ_CHECK(written == replies.size());
        }
        if (status != ws::read_status::more) co_return;
        constexpr std::size_t chunk = 4096;
        auto [ec, n] = co_await stream.async_read_some(asio::buffer(reader.prepare(chunk), chunk), use_tuple);
        if (ec) co_return;
        reader.commit(n);
    }
}

asio::awaitable<void> serve(beast::test::stream stream, const connection_input& in, lmx::core::request_parser& parser) {
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> request;
        request.body_limit(http_body_limit);
        auto [ec, n] = co_await http::async_read(stream, buffer, request, use_tuple);
        if (ec) co_return;
        const auto& req = request.get();
        if (websocket::is_upgrade(req)) {
            const auto path = path_of(req.target());
            if (path != "/" && path != "/ws") {
                co_await send_plain(stream, req.version(), false, http::status::not_found);
                co_return;
            }
            {
                websocket::stream<beast::test::stream&> handshake(stream);
                handshake.set_option(websocket::stream_base::decorator(
                    [](websocket::response_type& res) { res.set(http::field::server, "lmx"); }));
                auto [aec] = co_await handshake.async_accept(req, use_tuple);
                if (aec) co_return;
            }
            stream.append(beast::string_view(in.frames.data(), in.frames.size()));
            co_await serve_websocket(stream, in, parser);
            co_return;
        }
        const bool keep_alive = req.keep_alive();
        co_await send_plain(stream, req.version(), keep_alive, http::status::not_found);
        if (!keep_alive) co_return;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static lmx::core::request_parser parser;
    const connection_input in = split(std::string_view(reinterpret_cast<const char*>(data), size));

    asio::io_context ioc;
    beast::test::stream server(ioc);
    beast::test::stream client(ioc);  // collects what the server writes
    server.connect(client);
    if (in.read_size != 0) server.read_size(in.read_size);
    if (in.write_size != 0) server.write_size(in.write_size);
    server.append(beast::string_view(in.http.data(), in.http.size()));
    // EOF once the input is used up (bytes appended later are still read first).
    server.close_remote();

    bool done = false;
    asio::co_spawn(ioc, serve(std::move(server), in, parser), [&](std::exception_ptr e) {
        done = true;
        // The listener drops a connection whose coroutine throws a std::exception; so do we.
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception&) {}
        }
    });
    // Only the connection's own timers may be left once it is done; they are dropped unrun.
    while (!done && ioc.run_one()) {}
    LMX_FUZZ_CHECK(done);
    return 0;
}
