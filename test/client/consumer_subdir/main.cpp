// The example, unchanged, in a project that pulls lmx in with add_subdirectory.
//   lmx_subdir_consumer <url>

#include <lmx/client/client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdio>
#include <exception>

void use(lmx::fencing_token token) { std::printf("token %llu\n", static_cast<unsigned long long>(token)); }

boost::asio::awaitable<void> work(lmx::client& client) {
    co_await client.connect();  // url from options, e.g. "unix:///run/lmx.sock"
    {
        auto guard = co_await client.acquire("orders");  // lmx::lock_guard, RAII
        use(guard.fencing_token());
    }  // released on scope exit
    auto pool = co_await client.acquire("gpu", {.ttl = std::chrono::seconds(30), .max = 4});
    co_await pool.release();  // confirmed release
}

int main(int argc, char** argv) {
    boost::asio::io_context ctx;
    lmx::client_options options;
    if (argc > 1) options.url = argv[1];
    lmx::client client(ctx.get_executor(), options);
    int status = 0;
    boost::asio::co_spawn(ctx, work(client), [&](std::exception_ptr e) {
        try {
            if (e) std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "consumer: %s\n", ex.what());
            status = 1;
        }
        client.close();
    });
    ctx.run();
    return status;
}
