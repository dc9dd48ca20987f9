#pragma once

// What the ThreadSanitizer suites share: an io_context run by several threads, coroutines and
// plain threads that use the clients at once, and checks that hold across threads and clients.
// Boost.Test assertions are not thread-safe, so other threads record what went wrong in
// `failures` and only the test's main thread asserts.

#include "broker_process.hpp"

#include <lmx/client/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

namespace lmx {
// So that Boost.Test can print `ec == errc::x` when it fails.
inline std::ostream& operator<<(std::ostream& os, errc e) { return os << make_error_code(e).message(); }
}  // namespace lmx

namespace lmx::tsan {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using test::broker_process;

inline constexpr auto tuple = asio::as_tuple(asio::use_awaitable);

// A completion token for threads: the call returns a std::future of a tuple of the completion's
// arguments, error_code first (as_tuple(use_future) does not compile with Boost 1.81). Its handler
// has no executor, so it runs on the client's strand, where it only fills the promise.
struct future_tuple_t {};
inline constexpr future_tuple_t future_tuple{};

// The transports a scenario may run over (see broker_process::url).
inline const char* const transports[] = {"tcp", "unix", "ws"};

inline std::string fresh_key(std::string_view prefix) {
    static std::atomic<unsigned> n{0};
    return std::string(prefix) + "-" + std::to_string(++n);
}

// Everything runs several times slower under ThreadSanitizer: a late reply must not look like a
// lost one, and no hold may end by its lease while a test still uses it.
inline client_options options_for(const std::string& url) {
    client_options o;
    o.url = url;
    o.connect_timeout = 5s;
    o.request_timeout = 20s;
    o.ttl = 60s;
    return o;
}

inline std::string describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "an exception of unknown type";
    }
}

class failures {
public:
    void add(std::string what) {
        std::lock_guard lock(mutex_);
        if (seen_.size() < 20) seen_.push_back(std::move(what));
        ++count_;
    }
    void check(bool ok, std::string_view what) {
        if (!ok) add(std::string(what));
    }
    std::size_t count() const {
        std::lock_guard lock(mutex_);
        return count_;
    }
    std::string summary() const {
        std::lock_guard lock(mutex_);
        std::string out;
        for (auto& s : seen_) out += "\n  " + s;
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> seen_;
    std::size_t count_ = 0;
};

// Waits for a future without hanging the test when the operation never completes.
template <class T>
T wait(std::future<T> f, std::chrono::milliseconds limit = 60s) {
    if (f.wait_for(limit) != std::future_status::ready)
        throw std::runtime_error("an operation did not complete in time");
    return f.get();
}

inline bool wait_until(const auto& done, std::chrono::milliseconds limit) {
    const auto deadline = steady::now() + limit;
    while (!done() && steady::now() < deadline) std::this_thread::sleep_for(5ms);
    return done();
}

// An io_context run by `threads` threads, as an application with a thread pool runs it.
class runner {
public:
    explicit runner(failures& f, unsigned threads = 4) : failures_(f), work_(asio::make_work_guard(ctx_)) {
        for (unsigned i = 0; i < threads; ++i)
            threads_.emplace_back([this] {
                for (;;) {
                    try {
                        ctx_.run();
                        return;
                    } catch (...) {
                        failures_.add("exception out of io_context::run: " + describe(std::current_exception()));
                    }
                }
            });
    }
    ~runner() { stop(); }
    runner(const runner&) = delete;
    runner& operator=(const runner&) = delete;

    asio::any_io_executor executor() { return ctx_.get_executor(); }

    // Lets the threads end once the work runs out. Work still left after `limit` means that an
    // operation, a connection or a timer leaked: false then (and the context is stopped anyway).
    bool finish(std::chrono::milliseconds limit = 10s) {
        work_.reset();
        const bool drained = wait_until([this] { return ctx_.stopped(); }, limit);
        stop();
        return drained;
    }

private:
    void stop() {
        ctx_.stop();
        for (auto& t : threads_)
            if (t.joinable()) t.join();
        threads_.clear();
    }

    failures& failures_;
    asio::io_context ctx_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    std::vector<std::thread> threads_;
};

// The coroutines and plain threads of one test; the test body waits for all of them.
class crew {
public:
    explicit crew(failures& f) : failures_(f) {}
    ~crew() { join(); }
    crew(const crew&) = delete;
    crew& operator=(const crew&) = delete;

    template <class Executor, class Awaitable>
    void spawn(const Executor& ex, Awaitable a) {
        ++running_;
        asio::co_spawn(ex, std::move(a), [this](std::exception_ptr e) {
            if (e) failures_.add("a coroutine failed: " + describe(e));
            --running_;
        });
    }

    template <class F>
    void thread(F f) {
        ++running_;
        threads_.emplace_back([this, f = std::move(f)]() mutable {
            try {
                f();
            } catch (...) {
                failures_.add("a thread failed: " + describe(std::current_exception()));
            }
            --running_;
        });
    }

    bool wait(std::chrono::milliseconds limit = 60s) {
        const bool done = wait_until([this] { return running_ == 0; }, limit);
        if (done) join();
        return done;
    }

private:
    void join() {
        for (auto& t : threads_)
            if (t.joinable()) t.join();
        threads_.clear();
    }

    failures& failures_;
    std::atomic<int> running_{0};
    std::vector<std::thread> threads_;
};

// Each callback operation must complete exactly once.
class completions {
public:
    // A marker for one operation; its handler passes it to done().
    std::shared_ptr<std::atomic<int>> start() {
        ++started_;
        return std::make_shared<std::atomic<int>>(0);
    }
    void done(std::atomic<int>& once) {
        if (once.fetch_add(1) == 0)
            ++completed_;
        else
            ++repeated_;
    }
    bool wait_all(std::chrono::milliseconds limit) {
        return wait_until([this] { return completed_ >= started_; }, limit);
    }
    int started() const { return started_; }
    int completed() const { return completed_; }
    int repeated() const { return repeated_; }

private:
    std::atomic<int> started_{0}, completed_{0}, repeated_{0};
};

// A resource one exclusive lock guards. Checked with atomics only: two clients are linked only
// through the broker, and ThreadSanitizer sees no happens-before across a socket, so plain
// variables here would be reported against the test rather than the library.
class guarded {
public:
    // A holder comes in with the fencing token of its grant.
    void enter(fencing_token token) {
        if (inside_.fetch_add(1) != 0) ++overlaps_;
        // Grants of one key follow each other, so each holder brings a larger token than the last.
        if (token <= last_token_.exchange(token)) ++stale_tokens_;
        ++entries_;
    }
    // The read-modify-write that the lock makes safe, split so that an overlap loses an update.
    long read() const { return value_.load(); }
    void write(long v) { value_.store(v); }
    void leave() { inside_.fetch_sub(1); }

    int entries() const { return entries_; }
    long value() const { return value_; }
    int overlaps() const { return overlaps_; }
    int stale_tokens() const { return stale_tokens_; }

private:
    std::atomic<int> inside_{0}, entries_{0}, overlaps_{0}, stale_tokens_{0};
    std::atomic<long> value_{0};
    std::atomic<fencing_token> last_token_{0};
};

// A resource with reader (shared) and writer (exclusive) holders.
class guarded_rw {
public:
    void enter_shared() {
        readers_.fetch_add(1);
        if (writers_.load() != 0) ++conflicts_;
        ++entries_;
    }
    void leave_shared() { readers_.fetch_sub(1); }
    void enter_exclusive() {
        if (writers_.fetch_add(1) != 0) ++conflicts_;
        if (readers_.load() != 0) ++conflicts_;
        ++entries_;
    }
    void leave_exclusive() { writers_.fetch_sub(1); }
    int entries() const { return entries_; }
    int conflicts() const { return conflicts_; }

private:
    std::atomic<int> readers_{0}, writers_{0}, entries_{0}, conflicts_{0};
};

// A thread that destroys the guards handed to it, so that guards die on a thread that neither
// took them nor runs the io_context.
class reaper {
public:
    using guard = std::variant<lock_guard, multi_lock_guard>;
    reaper() : thread_([this] { run(); }) {}
    ~reaper() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }
    reaper(const reaper&) = delete;
    reaper& operator=(const reaper&) = delete;

    void take(guard g) {
        {
            std::lock_guard lock(mutex_);
            queue_.push_back(std::move(g));
        }
        wake_.notify_one();
    }
    int destroyed() const { return destroyed_; }

private:
    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return;
            auto batch = std::move(queue_);
            queue_.clear();
            lock.unlock();
            destroyed_ += static_cast<int>(batch.size());
            batch.clear();
            lock.lock();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<guard> queue_;
    bool stop_ = false;
    std::atomic<int> destroyed_{0};
    std::thread thread_;
};

// Polls the broker's view of `key` (from the calling thread) until `pred` holds.
template <class Pred>
lock_info wait_info(client& c, const std::string& key, Pred pred, std::chrono::milliseconds limit = 10s) {
    const auto deadline = steady::now() + limit;
    for (;;) {
        auto info = wait(c.info(key, asio::use_future));
        if (pred(info) || steady::now() >= deadline) return info;
        std::this_thread::sleep_for(10ms);
    }
}

inline bool is_free(const lock_info& i) { return i.holders.empty() && i.waiters == 0; }

inline asio::awaitable<void> sleep_for(std::chrono::microseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(tuple);
}

}  // namespace lmx::tsan

template <class... Args>
struct boost::asio::async_result<lmx::tsan::future_tuple_t, void(Args...)> {
    template <class Initiation, class... InitArgs>
    static auto initiate(Initiation&& initiation, lmx::tsan::future_tuple_t, InitArgs&&... args) {
        using result = std::tuple<std::decay_t<Args>...>;
        auto promise = std::make_shared<std::promise<result>>();
        auto future = promise->get_future();
        std::forward<Initiation>(initiation)([promise](Args... a) { promise->set_value(result(std::move(a)...)); },
                                             std::forward<InitArgs>(args)...);
        return future;
    }
};
