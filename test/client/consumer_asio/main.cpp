// lmx in a program that keeps Asio as it likes it: header-only, with deprecated names
// (io_context::work) and TLS, none of which lmx's own build settings may take away. Also the
// client's conventions: a client made from the io_context, string_view keys, acquire_many with
// keys written out inside co_await, error codes compared with std::errc.
//   lmx_asio_consumer <url>

#include <lmx/client/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace asio = boost::asio;

asio::awaitable<void> work(lmx::client& client, lmx::client& other) {
    const std::string key = "asio-consumer";
    auto guard = co_await client.acquire(std::string_view(key));
    auto [ec, none] = co_await other.acquire(key, {.wait = false}, asio::as_tuple(asio::use_awaitable));
    if (ec != std::errc::resource_unavailable_try_again) throw std::runtime_error("try-lock: " + ec.message());
    co_await guard.release();
    auto both = co_await client.acquire_many({"asio-consumer-a", key});
    if (both.keys().size() != 2) throw std::runtime_error("acquire_many took the wrong keys");
    co_await both.release();
    std::puts("ok");
}

int main(int argc, char** argv) {
    asio::io_context ctx;
    // The deprecated work guard: compiles only when lmx does not force BOOST_ASIO_NO_DEPRECATED.
    std::optional<asio::io_context::work> keep(std::in_place, ctx);
    keep.reset();
    // TLS: links only when lmx does not force BOOST_ASIO_SEPARATE_COMPILATION on its users.
    asio::ssl::context tls(asio::ssl::context::tls_client);
    asio::ssl::stream<asio::ip::tcp::socket> secure(ctx, tls);
    lmx::client_options options;
    if (argc > 1) options.url = argv[1];
    lmx::client client(ctx, options);
    lmx::client other(ctx, options);
    int status = 0;
    asio::co_spawn(ctx, work(client, other), [&](std::exception_ptr e) {
        try {
            if (e) std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "lmx_asio_consumer: %s\n", ex.what());
            status = 1;
        }
        client.close();
        other.close();
    });
    ctx.run();
    return status;
}
