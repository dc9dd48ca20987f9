// A semaphore as a rate limiter: twelve jobs share an upstream API that allows three calls at
// a time. Every process that uses the key "upstream-api" with max = 3 shares the same limit.
//
//   rate_limiter [url]

#include "common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr std::uint32_t max_concurrent = 3;

struct figures {
    int running = 0, most = 0, finished = 0;
};

asio::awaitable<void> job(lmx::client& client, figures& f, int n) {
    // The ttl bounds how long a crashed job can keep its slot.
    auto slot = co_await client.acquire("upstream-api", {.ttl = 10s, .max = max_concurrent});
    f.most = std::max(f.most, ++f.running);
    std::printf("job %2d calls the API (%d in flight)\n", n, f.running);
    asio::steady_timer call(co_await asio::this_coro::executor, 50ms);  // the API call
    co_await call.async_wait(asio::use_awaitable);
    --f.running;
    co_await slot.release();
    ++f.finished;
}

int main(int argc, char** argv) {
    asio::io_context ctx;
    lmx::client client(ctx.get_executor(), example_options(argc, argv));
    figures f;
    int status = 0;
    constexpr int jobs = 12;
    for (int i = 0; i < jobs; ++i) {
        asio::co_spawn(ctx, job(client, f, i), [&](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::fprintf(stderr, "rate_limiter: %s\n", ex.what());
                }
                status = 1;
            }
            if (f.finished == jobs || status) client.close();
        });
    }
    ctx.run();
    std::printf("at most %d calls were in flight (limit %u)\n", f.most, max_concurrent);
    return status != 0 || f.most > static_cast<int>(max_concurrent);
}
