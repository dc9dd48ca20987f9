#pragma once

// Runs a coroutine test body to its end on an io_context of the test's own.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <stdexcept>

namespace lmx::test {

// Runs `body(executor)` on `ctx` until it ends, and rethrows what it throws; a body still running
// after `limit` fails the test.
template <class Body>
void run_body(boost::asio::io_context& ctx, Body&& body, std::chrono::seconds limit) {
    std::exception_ptr failure;
    bool finished = false;
    boost::asio::co_spawn(ctx, body(ctx.get_executor()), [&](std::exception_ptr e) {
        failure = e;
        finished = true;
    });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!finished && !ctx.stopped() && std::chrono::steady_clock::now() < deadline)
        ctx.run_one_for(std::chrono::milliseconds(100));
    if (!finished) throw std::runtime_error("the test body did not finish in time");
    if (failure) std::rethrow_exception(failure);
}

}  // namespace lmx::test
