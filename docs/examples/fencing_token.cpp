// Fencing tokens: a lease can end while its holder is paused (GC, swap, a slow disk), and the
// holder may then write after someone else took the lock. The protected resource stops that by
// refusing any write whose token is older than the newest it has seen.
//
//   fencing_token [url]

#include "common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdio>
#include <exception>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// The storage service; in real life another process that receives the token with each write.
class protected_store {
public:
    bool write(lmx::fencing_token token, const std::string& value) {
        if (token < newest_) {
            std::printf("store: refused '%s' (token %llu < %llu)\n", value.c_str(),
                        static_cast<unsigned long long>(token), static_cast<unsigned long long>(newest_));
            return false;
        }
        newest_ = token;
        value_ = value;
        std::printf("store: wrote '%s' with token %llu\n", value.c_str(), static_cast<unsigned long long>(token));
        return true;
    }
    const std::string& value() const { return value_; }

private:
    lmx::fencing_token newest_ = 0;
    std::string value_;
};

asio::awaitable<bool> demo(lmx::client& slow, lmx::client& fast, protected_store& store) {
    auto ex = co_await asio::this_coro::executor;
    // The slow worker takes the lock with a short lease and then stalls past it.
    auto stale = co_await slow.acquire("config", {.ttl = 200ms});
    asio::steady_timer pause(ex, 400ms);
    co_await pause.async_wait(asio::use_awaitable);
    std::printf("slow worker: lease %s\n", stale.lost() ? "lost (the broker said lock-lost)" : "still held?");

    // Meanwhile the fast worker got the lock, with a larger token, and wrote.
    auto fresh = co_await fast.acquire("config");
    store.write(fresh.fencing_token(), "written by the fast worker");

    // The slow worker wakes up and writes with its old token: refused.
    bool stale_write = store.write(stale.fencing_token(), "written by the slow worker");
    co_return !stale_write && store.value() == "written by the fast worker";
}

int main(int argc, char** argv) {
    asio::io_context ctx;
    auto options = example_options(argc, argv);
    lmx::client slow(ctx.get_executor(), options), fast(ctx.get_executor(), options);
    protected_store store;
    int status = 0;
    asio::co_spawn(ctx, demo(slow, fast, store), [&](std::exception_ptr e, bool ok) {
        try {
            if (e) std::rethrow_exception(e);
            if (!ok) status = 1;
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "fencing_token: %s\n", ex.what());
            status = 1;
        }
        slow.close();
        fast.close();
    });
    ctx.run();
    return status;
}
