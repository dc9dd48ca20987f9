// The basic guard: lock a key for a scope, then take a slot of a semaphore and release it
// with a confirmed release.
//
//   basic_guard [url]        e.g. basic_guard unix:///run/lmx.sock

#include "common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdio>
#include <exception>

void use(lmx::fencing_token token) {
    std::printf("holding orders with fencing token %llu\n", static_cast<unsigned long long>(token));
}

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
    lmx::client client(ctx.get_executor(), example_options(argc, argv));
    int status = 0;
    boost::asio::co_spawn(ctx, work(client), [&](std::exception_ptr e) {
        try {
            if (e) std::rethrow_exception(e);
            std::printf("done\n");
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "basic_guard: %s\n", ex.what());
            status = 1;
        }
        client.close();  // lets ctx.run() return
    });
    ctx.run();
    return status;
}
