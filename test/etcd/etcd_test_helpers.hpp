#pragma once

// What the etcd suites share: pauses and waits inside coroutine bodies, and client options with
// timeouts short enough for tests that kill members.

#include <lmx/etcd/client.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace lmx::test {

inline boost::asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, d);
    co_await t.async_wait(boost::asio::use_awaitable);
}

// Polls `ready` until it holds or `limit` passes; returns it. Takes [&] lambdas (g++ 12 destroys a
// lambda temporary in a co_await expression twice).
template <class Ready>
boost::asio::awaitable<bool> until(Ready ready, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!ready() && std::chrono::steady_clock::now() < deadline) co_await sleep_for(std::chrono::milliseconds(10));
    co_return ready();
}

inline etcd::options etcd_options(std::vector<std::string> endpoints, std::chrono::milliseconds request_timeout) {
    etcd::options o;
    o.endpoints = std::move(endpoints);
    o.connect_timeout = std::chrono::milliseconds(500);
    o.request_timeout = request_timeout;
    return o;
}

}  // namespace lmx::test
