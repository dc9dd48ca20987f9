#pragma once

// Shared by lmx-bench and lmx-floor: latency summaries, the JSON result line, progress on a
// terminal, and raising the open-files limit.

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace lmx::bench {

using bench_clock = std::chrono::steady_clock;

inline std::uint64_t ns_between(bench_clock::time_point a, bench_clock::time_point b) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

// CPU time this process has used so far, user and system, in nanoseconds (CPU per cycle is the
// figure a VM's wake-up cost does not move).
inline std::uint64_t process_cpu_ns() {
    timespec t{};
    if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) != 0) return 0;
    return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(t.tv_nsec);
}

struct summary {
    double p50_us = 0, p99_us = 0, max_us = 0;
};

// Nearest-rank percentiles of samples in nanoseconds, reported in microseconds.
inline summary summarize(std::vector<std::uint64_t> ns) {
    summary s;
    if (ns.empty()) return s;
    std::sort(ns.begin(), ns.end());
    auto rank = [&](double p) {
        auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(ns.size())));
        return static_cast<double>(ns[std::min(ns.size() - 1, i == 0 ? 0 : i - 1)]) / 1000.0;
    };
    s.p50_us = rank(0.50);
    s.p99_us = rank(0.99);
    s.max_us = static_cast<double>(ns.back()) / 1000.0;
    return s;
}

inline std::string json_summary(const summary& s) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}", s.p50_us, s.p99_us, s.max_us);
    return buf;
}

inline std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        out += c;
    }
    return out + '"';
}

// "\r<label> done/total" on stderr, at most every 200 ms, only when stderr is a terminal.
class progress {
public:
    explicit progress(std::string label) : label_(std::move(label)), tty_(::isatty(2) == 1) {}
    void update(std::uint64_t done, std::uint64_t total) {
        if (!tty_) return;
        auto now = bench_clock::now();
        if (now - last_ < std::chrono::milliseconds(200) && done < total) return;
        last_ = now;
        std::fprintf(stderr, "\r%s %llu/%llu ", label_.c_str(), static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(total));
        std::fflush(stderr);
    }
    void finish() {
        if (tty_) std::fprintf(stderr, "\r\033[K");
    }

private:
    std::string label_;
    bool tty_;
    bench_clock::time_point last_{};
};

// Lifts the soft open-files limit to the hard limit (many connections need many descriptors).
inline void raise_open_files_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace lmx::bench
