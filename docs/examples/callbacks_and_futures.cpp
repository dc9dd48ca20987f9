// The same client without coroutines: completion callbacks, then std::future from a thread
// that is not running the io_context.
//
//   callbacks_and_futures [url]

#include "common.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <cstdio>
#include <future>
#include <thread>

namespace asio = boost::asio;
using lmx::error_code;

int main(int argc, char** argv) {
    asio::io_context ctx;
    auto work = asio::make_work_guard(ctx);
    std::thread io([&] { ctx.run(); });
    int status = 0;
    {
        lmx::client client(ctx.get_executor(), example_options(argc, argv));

        // Callbacks: each step starts the next; the guard lives in the handler chain.
        std::promise<void> chain_done;
        client.acquire("invoices", [&](error_code ec, lmx::lock_guard guard) {
            if (ec) {
                std::fprintf(stderr, "acquire: %s\n", ec.message().c_str());
                status = 1;
                return chain_done.set_value();
            }
            std::printf("callback: holding invoices (token %llu)\n",
                        static_cast<unsigned long long>(guard.fencing_token()));
            // release() refers to the hold, so the guard may go out of scope right after.
            guard.release([&](error_code rec) {
                std::printf("callback: released invoices: %s\n", rec ? rec.message().c_str() : "ok");
                chain_done.set_value();
            });
        });
        chain_done.get_future().wait();

        // Futures: block this thread, not the io_context's. Failures arrive as exceptions.
        try {
            auto guard = client.acquire("invoices", asio::use_future).get();
            std::printf("future: holding invoices (token %llu)\n",
                        static_cast<unsigned long long>(guard.fencing_token()));
            auto info = client.info("invoices", asio::use_future).get();
            std::printf("future: %zu holder(s)\n", info.holders.size());
            guard.release(asio::use_future).get();
            std::printf("future: released\n");
        } catch (const boost::system::system_error& e) {
            std::fprintf(stderr, "future: %s\n", e.what());
            status = 1;
        }
    }  // the client closes its connection
    work.reset();
    io.join();
    return status;
}
