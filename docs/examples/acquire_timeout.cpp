// Acquire with a timeout, two ways: the request's own timeout (the broker withdraws it), and
// per-operation cancellation with `||` against a timer. Either way nothing is left queued.
//
//   acquire_timeout [url]

#include "common.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdio>
#include <exception>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;

asio::awaitable<void> demo(lmx::client& holder, lmx::client& client) {
    // Someone else holds the report lock for a while.
    auto held = co_await holder.acquire("nightly-report", {.ttl = 5s});

    // 1. The request's timeout: as_tuple turns the failure into an error code.
    auto [ec, guard] =
        co_await client.acquire("nightly-report", {.timeout = 300ms}, asio::as_tuple(asio::use_awaitable));
    if (ec == lmx::errc::timeout)
        std::printf("gave up after 300 ms: %s\n", ec.message().c_str());
    else if (ec)
        throw boost::system::system_error(ec);

    // 2. Any awaitable deadline: whichever finishes first cancels the other.
    asio::steady_timer deadline(co_await asio::this_coro::executor, 300ms);
    auto winner = co_await (client.acquire("nightly-report") || deadline.async_wait(asio::use_awaitable));
    if (winner.index() == 1) std::printf("timer fired first; the acquire was withdrawn\n");

    auto info = co_await client.info("nightly-report");
    std::printf("waiters left at the broker: %u\n", info.waiters);
    co_await held.release();
    // Free now, and nobody stale is in line for it.
    auto mine = co_await client.acquire("nightly-report", {.wait = false});
    std::printf("got it: token %llu\n", static_cast<unsigned long long>(mine.fencing_token()));
}

int main(int argc, char** argv) {
    asio::io_context ctx;
    auto options = example_options(argc, argv);
    lmx::client holder(ctx.get_executor(), options), client(ctx.get_executor(), options);
    int status = 0;
    asio::co_spawn(ctx, demo(holder, client), [&](std::exception_ptr e) {
        try {
            if (e) std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "acquire_timeout: %s\n", ex.what());
            status = 1;
        }
        holder.close();
        client.close();
    });
    ctx.run();
    return status;
}
