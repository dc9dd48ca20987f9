// Throughput and memory of lmx::core::lock_table alone (no I/O): acquire+release pairs per second
// on one key and across many keys, heap bytes per held lock, and the cost of a retried request
// (the same id again) behind a long queue against an empty one.
//
//   lmx_table_bench [--pairs N] [--keys N] [--runs N] [--queue N]

#include <lmx/core/lock_table.hpp>

#include <malloc.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace lmx::core;
using bench_clock = std::chrono::steady_clock;

struct counting_sink final : effect_sink {
    std::uint64_t grants = 0;
    void on_effect(const effect& e) override { grants += e.kind == effect_kind::granted; }
};

std::vector<std::string> names(const char* prefix, std::size_t n) {
    std::vector<std::string> out;
    out.reserve(n);
    char buf[32];
    for (std::size_t i = 0; i < n; ++i) {
        int len = std::snprintf(buf, sizeof buf, "%s%07zu", prefix, i);
        out.emplace_back(buf, static_cast<std::size_t>(len));
    }
    return out;
}

std::size_t heap_in_use() { return mallinfo2().uordblks; }

std::size_t rss_bytes() {
    std::ifstream f("/proc/self/statm");
    std::size_t pages = 0, resident = 0;
    f >> pages >> resident;
    return resident * 4096;
}

double seconds_since(bench_clock::time_point t0) {
    return std::chrono::duration<double>(bench_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Acquire then release, the same key each time: the uncontended hot path.
double one_key(std::size_t pairs, const std::vector<std::string>& ids) {
    counting_sink sink;
    lock_table table(sink);
    time_point now{};
    auto t0 = bench_clock::now();
    for (std::size_t i = 0; i < pairs; ++i) {
        const std::string& id = ids[i & (ids.size() - 1)];
        table.acquire({.session = 1, .id = id, .key = "orders"}, now);
        table.release("orders", id, now);
    }
    double s = seconds_since(t0);
    if (sink.grants != pairs) std::abort();
    return static_cast<double>(pairs) / s;
}

struct many_result {
    double pairs_per_s;
    double heap_bytes_per_lock;
    double rss_bytes_per_lock;
    double key_text;
};

// Acquire N distinct keys (all held at once), then release them all.
many_result many_keys(const std::vector<std::string>& keys, const std::vector<std::string>& ids) {
    counting_sink sink;
    auto table = std::make_unique<lock_table>(sink);
    time_point now{};
    malloc_trim(0);
    std::size_t heap0 = heap_in_use(), rss0 = rss_bytes();
    auto t0 = bench_clock::now();
    for (std::size_t i = 0; i < keys.size(); ++i) table->acquire({.session = 1, .id = ids[i], .key = keys[i]}, now);
    double acquire_s = seconds_since(t0);
    std::size_t heap1 = heap_in_use(), rss1 = rss_bytes();
    t0 = bench_clock::now();
    for (std::size_t i = 0; i < keys.size(); ++i) table->release(keys[i], ids[i], now);
    double release_s = seconds_since(t0);
    if (sink.grants != keys.size() || table->counters().keys != 0) std::abort();
    double n = static_cast<double>(keys.size());
    return {n / (acquire_s + release_s), static_cast<double>(heap1 - heap0) / n, static_cast<double>(rss1 - rss0) / n,
            static_cast<double>(keys[0].size())};
}

// Nanoseconds per retry of a waiting request (single key, and a two-key acquire-many) that is
// last in a queue of `waiters` others: a retry re-sends the queued notice with its position.
struct retry_cost {
    double single_ns;
    double multi_ns;
};

retry_cost retry(std::size_t waiters, std::size_t retries) {
    counting_sink sink;
    lock_table table(sink, {.max_waiters = static_cast<std::uint32_t>(waiters + 16)});
    time_point now{};
    table.acquire({.session = 1, .id = "holder", .key = "q"}, now);
    table.acquire({.session = 1, .id = "holder2", .key = "q2"}, now);
    auto ids = names("w", waiters);
    for (std::size_t i = 0; i < waiters; ++i)
        table.acquire({.session = 3, .id = ids[i], .key = i % 2 ? "q2" : "q"}, now);
    table.acquire({.session = 2, .id = "tail", .key = "q"}, now);
    const std::string_view two[] = {"q", "q2"};
    table.acquire_many({.session = 2, .id = "tail-many", .keys = two}, now);
    auto t0 = bench_clock::now();
    for (std::size_t i = 0; i < retries; ++i) table.acquire({.session = 2, .id = "tail", .key = "q"}, now);
    double single = seconds_since(t0) * 1e9 / static_cast<double>(retries);
    t0 = bench_clock::now();
    for (std::size_t i = 0; i < retries; ++i) table.acquire_many({.session = 2, .id = "tail-many", .keys = two}, now);
    double multi = seconds_since(t0) * 1e9 / static_cast<double>(retries);
    return {single, multi};
}

std::size_t arg(int argc, char** argv, const char* name, std::size_t dflt) {
    for (int i = 1; i + 1 < argc; ++i)
        if (std::strcmp(argv[i], name) == 0) {
            std::size_t v = dflt;
            std::from_chars(argv[i + 1], argv[i + 1] + std::strlen(argv[i + 1]), v);
            return v;
        }
    return dflt;
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
            std::puts(
                "usage: lmx_table_bench [--pairs N (5000000)] [--keys N (1000000)] [--runs N (5)] [--queue N "
                "(200000)]");
            return 0;
        }
    std::size_t pairs = arg(argc, argv, "--pairs", 5'000'000);
    std::size_t nkeys = arg(argc, argv, "--keys", 1'000'000);
    std::size_t runs = std::max<std::size_t>(1, arg(argc, argv, "--runs", 5));
    std::size_t queue = arg(argc, argv, "--queue", 200'000);
    auto ids = names("r", std::max<std::size_t>(nkeys, 1024));
    auto keys = names("k", nkeys);
    std::vector<std::string> small_ids(ids.begin(), ids.begin() + 1024);

    std::vector<double> one, many, heap, rss, retry_empty, retry_long, multi_empty, multi_long;
    for (std::size_t r = 0; r < runs; ++r) {
        auto e = retry(0, 200'000);
        auto l = retry(queue, 200'000);
        retry_empty.push_back(e.single_ns);
        retry_long.push_back(l.single_ns);
        multi_empty.push_back(e.multi_ns);
        multi_long.push_back(l.multi_ns);
        one.push_back(one_key(pairs, small_ids));
        auto m = many_keys(keys, ids);
        many.push_back(m.pairs_per_s);
        heap.push_back(m.heap_bytes_per_lock - m.key_text * 0);
        rss.push_back(m.rss_bytes_per_lock);
        std::fprintf(stderr,
                     "run %zu: one key %.2f M pairs/s, %zu keys %.2f M pairs/s, %.1f heap B/lock, %.1f RSS B/lock\n",
                     r + 1, one.back() / 1e6, nkeys, many.back() / 1e6, heap.back(), rss.back());
    }
    std::printf("lock_table benchmark, median of %zu runs\n", runs);
    std::printf("  one key, acquire+release pairs/s      : %.0f\n", median(one));
    std::printf("  %zu keys held, acquire+release pairs/s : %.0f\n", nkeys, median(many));
    std::printf("  heap bytes per held lock              : %.1f (key text %zu bytes, lock id %zu bytes, both inline)\n",
                median(heap), keys[0].size(), ids[0].size());
    std::printf("  RSS bytes per held lock               : %.1f\n", median(rss));
    std::printf("  retry behind 0 / %zu waiters, ns      : %.0f / %.0f (x%.2f)\n", queue, median(retry_empty),
                median(retry_long), median(retry_long) / median(retry_empty));
    std::printf("  acquire-many retry, same queues, ns   : %.0f / %.0f (x%.2f)\n", median(multi_empty),
                median(multi_long), median(multi_long) / median(multi_empty));
    return 0;
}
