// An HTTP server that serves one request per path at a time, across every server process that
// shares the broker: the C++ form of live-mutex's classic Express middleware
//
//   app.use((req, res, next) => client.lock(req.path, (err, unlock) => { res.once('finish', unlock); next(); }));
//
// Each request holds the lock on its path while it is handled and answered; the guard releases
// it when the request's scope ends, whatever way it ends.
//
//   http_server [url] [port] [max_requests]     port 0: any free port; max_requests 0: forever

#include "common.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

struct server {
    lmx::client& client;
    tcp::acceptor acceptor;
    int max_requests = 0;
    int served = 0;

    void stop() {
        acceptor.close();
        client.close();
    }

    asio::awaitable<http::response<http::string_body>> handle(const http::request<http::string_body>& req) {
        std::string path(req.target().substr(0, req.target().find('?')));
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::content_type, "text/plain");
        res.keep_alive(req.keep_alive());
        auto [ec, guard] =
            co_await client.acquire("http:" + path, {.timeout = 5s}, asio::as_tuple(asio::use_awaitable));
        if (ec) {
            res.result(http::status::service_unavailable);
            res.body() = "busy: " + ec.message() + "\n";
        } else {
            asio::steady_timer work(co_await asio::this_coro::executor, 20ms);  // the request's real work
            co_await work.async_wait(asio::use_awaitable);
            res.body() = "handled " + path + " under fencing token " + std::to_string(guard.fencing_token()) + "\n";
        }
        res.prepare_payload();
        co_return res;
    }  // the guard releases the path here

    asio::awaitable<void> session(tcp::socket socket) {
        beast::flat_buffer buffer;
        for (;;) {
            http::request<http::string_body> req;
            auto [rec, n] = co_await http::async_read(socket, buffer, req, asio::as_tuple(asio::use_awaitable));
            if (rec) break;
            auto res = co_await handle(req);
            auto [wec, m] = co_await http::async_write(socket, res, asio::as_tuple(asio::use_awaitable));
            if (max_requests > 0 && ++served >= max_requests) {
                stop();
                break;
            }
            if (wec || !res.keep_alive()) break;
        }
        boost::system::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_send, ignored);
    }

    asio::awaitable<void> listen() {
        for (;;) {
            auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;  // closed by stop()
            asio::co_spawn(acceptor.get_executor(), session(std::move(socket)), asio::detached);
        }
    }
};

int main(int argc, char** argv) {
    asio::io_context ctx;
    lmx::client client(ctx.get_executor(), example_options(argc, argv));
    auto port = static_cast<unsigned short>(argc > 2 ? std::atoi(argv[2]) : 8080);
    server s{client, tcp::acceptor(ctx, {asio::ip::make_address("127.0.0.1"), port}),
             argc > 3 ? std::atoi(argv[3]) : 0};
    std::printf("listening on http://127.0.0.1:%u\n", s.acceptor.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(ctx, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code, int) { s.stop(); });
    asio::co_spawn(ctx, s.listen(), [&](std::exception_ptr) { signals.cancel(); });
    ctx.run();
    return 0;
}
