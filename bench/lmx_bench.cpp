// lmx-bench: lock workloads against a running broker with the lmx C++ client.
//
//   lmx-bench run --url unix:///tmp/lmx.sock --workload w1 [--cycles N] [--in-flight N] [--procs N] [--json]
//   lmx-bench scale --url tcp://127.0.0.1:6970 --what locks|waiters|connections [--count N] [--json]
//
// A cycle is an acquire followed at once by a confirmed release. Workloads:
//   w1   one key, 20 in flight from one connection
//   w2   20 keys (one per in-flight worker), one connection
//   w3   one key, 4 client processes x 5 in flight (the cycles are split evenly between them)
//   w4   semaphore max 4 on one key, 20 in flight
//   lat  one key, one in flight: the uncontended acquire+release latency
// Reported: cycles/ms, wall time, acquire latency p50/p99/max, cycle latency, cycles per worker
// (min/max). `scale` reports the broker's resident memory (VmRSS of the pid the broker names in
// its stats; the broker must run on this machine) before and with the load held.

#include "bench_common.hpp"

#include <lmx/client/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <CLI/CLI.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>

namespace {

namespace asio = boost::asio;
using namespace lmx::bench;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct workload {
    unsigned in_flight;
    unsigned procs;
    bool key_per_worker;
    std::optional<std::uint32_t> max;
};

const std::map<std::string, workload> workloads = {
    {"w1", {20, 1, false, std::nullopt}}, {"w2", {20, 1, true, std::nullopt}},  {"w3", {5, 4, false, std::nullopt}},
    {"w4", {20, 1, false, 4u}},           {"lat", {1, 1, false, std::nullopt}},
};

struct run_args {
    std::string url;
    std::string name = "w1";
    std::size_t cycles = 10000;
    unsigned in_flight = 0;  // 0: the workload's
    unsigned procs = 0;
    std::string prefix;  // of the keys; empty: one of this process's own
    bool json = false;
};

// What one process measured.
struct proc_result {
    std::vector<std::uint64_t> acquire_ns;
    std::vector<std::uint64_t> cycle_ns;
    std::vector<std::uint64_t> per_worker;
    std::uint64_t errors = 0;
    std::string first_error;
    std::uint64_t end_ns = 0;  // steady clock, comparable across processes on one machine
    std::uint64_t cpu_ns = 0;  // CPU the process used from the start to the end of its run
};

std::uint64_t steady_ns() { return static_cast<std::uint64_t>(bench_clock::now().time_since_epoch().count()); }

// One process's share: `in_flight` workers on one connection doing `cycles` cycles between them.
// `ready` runs once connected and returns when the run may start.
proc_result run_share(const run_args& a, const workload& w, std::size_t cycles, unsigned worker_base,
                      const std::function<void()>& ready, bool show_progress) {
    asio::io_context io(1);
    lmx::client_options co;
    co.url = a.url;
    co.ttl = 10s;
    co.lock_request_timeout = 60s;
    lmx::client client(io.get_executor(), co);
    proc_result r;
    r.per_worker.assign(w.in_flight, 0);
    r.acquire_ns.reserve(cycles);
    r.cycle_ns.reserve(cycles);
    const std::string prefix = a.prefix.empty() ? "bench-" + a.name + "-" + std::to_string(::getpid()) + "-" : a.prefix;
    std::size_t started = 0, done = 0;
    unsigned finished = 0;  // workers that have ended
    progress prog(a.name + " " + a.url);
    bool connected = false;

    auto worker = [&](unsigned i) -> asio::awaitable<void> {
        std::string key = prefix + (w.key_per_worker ? std::to_string(worker_base + i) : std::string("k"));
        lmx::acquire_options opts{.max = w.max};
        while (started < cycles && r.errors == 0) {
            ++started;
            auto t0 = bench_clock::now();
            auto acquiring = client.acquire(key, opts, use_tuple);
            auto [ec, guard] = co_await std::move(acquiring);
            auto t1 = bench_clock::now();
            if (ec) {
                if (r.errors++ == 0) r.first_error = "acquire: " + ec.message();
                break;
            }
            auto releasing = guard.release(use_tuple);
            auto [rec] = co_await std::move(releasing);
            auto t2 = bench_clock::now();
            if (rec) {
                if (r.errors++ == 0) r.first_error = "release: " + rec.message();
                break;
            }
            r.acquire_ns.push_back(ns_between(t0, t1));
            r.cycle_ns.push_back(ns_between(t0, t2));
            ++r.per_worker[i];
            if (show_progress) prog.update(++done, cycles);
        }
    };

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [ec] = co_await client.connect(use_tuple);
            if (ec) {
                r.errors = 1;
                r.first_error = "connect: " + ec.message();
                co_return;
            }
            connected = true;
            ready();
            const std::uint64_t cpu0 = process_cpu_ns();
            // Workers run on the client's executor (its strand), as an application would: the
            // client then completes their calls without a hop through the scheduler. The
            // connection stays open (and io.run() with it) until the last worker ends.
            for (unsigned i = 0; i < w.in_flight; ++i)
                asio::co_spawn(client.get_executor(), worker(i), [&, cpu0, n = w.in_flight](std::exception_ptr) {
                    if (++finished < n) return;
                    r.end_ns = steady_ns();
                    r.cpu_ns = process_cpu_ns() - cpu0;
                    client.close();
                });
        },
        asio::detached);
    io.run();
    if (r.end_ns == 0) r.end_ns = steady_ns();
    if (show_progress) prog.finish();
    if (!connected && r.errors == 0) r.errors = 1;
    return r;
}

void put_u64(std::string& out, std::uint64_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }

void put_vec(std::string& out, const std::vector<std::uint64_t>& v) {
    put_u64(out, v.size());
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(std::uint64_t));
}

std::string serialize(const proc_result& r) {
    std::string out;
    put_vec(out, r.acquire_ns);
    put_vec(out, r.cycle_ns);
    put_vec(out, r.per_worker);
    put_u64(out, r.errors);
    put_u64(out, r.end_ns);
    put_u64(out, r.cpu_ns);
    put_u64(out, r.first_error.size());
    out += r.first_error;
    return out;
}

struct reader {
    const std::string& s;
    std::size_t at = 0;
    bool ok = true;
    std::uint64_t u64() {
        std::uint64_t v = 0;
        if (at + sizeof v > s.size()) {
            ok = false;
            return 0;
        }
        std::memcpy(&v, s.data() + at, sizeof v);
        at += sizeof v;
        return v;
    }
    std::vector<std::uint64_t> vec() {
        std::uint64_t n = u64();
        if (!ok || at + n * sizeof(std::uint64_t) > s.size()) {
            ok = false;
            return {};
        }
        std::vector<std::uint64_t> v(n);
        std::memcpy(v.data(), s.data() + at, n * sizeof(std::uint64_t));
        at += n * sizeof(std::uint64_t);
        return v;
    }
};

bool deserialize(const std::string& s, proc_result& r) {
    reader rd{s};
    r.acquire_ns = rd.vec();
    r.cycle_ns = rd.vec();
    r.per_worker = rd.vec();
    r.errors = rd.u64();
    r.end_ns = rd.u64();
    r.cpu_ns = rd.u64();
    auto n = rd.u64();
    if (!rd.ok || rd.at + n > s.size()) return false;
    r.first_error = s.substr(rd.at, n);
    return true;
}

bool write_all(int fd, const void* p, std::size_t n) {
    auto* c = static_cast<const char*>(p);
    while (n > 0) {
        auto k = ::write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        c += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

std::string read_all(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        auto k = ::read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        out.append(buf, static_cast<std::size_t>(k));
    }
    return out;
}

bool read_byte(int fd) {
    char c;
    for (;;) {
        auto k = ::read(fd, &c, 1);
        if (k < 0 && errno == EINTR) continue;
        return k == 1;
    }
}

// Forks one child per process; each connects, reports ready, waits for the common start, runs
// its share and sends back what it measured. Returns the start time through `t0`.
std::vector<proc_result> run_forked(const run_args& a, const workload& w, bench_clock::time_point& t0) {
    struct child {
        pid_t pid;
        int go;       // parent -> child
        int results;  // child -> parent: 'R' when connected, then the results
    };
    std::vector<child> kids;
    for (unsigned p = 0; p < w.procs; ++p) {
        int go[2], res[2];
        if (::pipe(go) != 0 || ::pipe(res) != 0) throw std::runtime_error("pipe failed");
        std::size_t share = a.cycles / w.procs + (p < a.cycles % w.procs ? 1 : 0);
        pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed");
        if (pid == 0) {
            ::close(go[1]);
            ::close(res[0]);
            for (auto& k : kids) {
                ::close(k.go);
                ::close(k.results);
            }
            auto r = run_share(
                a, w, share, p * w.in_flight,
                [&] {
                    write_all(res[1], "R", 1);
                    read_byte(go[0]);
                },
                false);
            auto bytes = serialize(r);
            write_all(res[1], bytes.data(), bytes.size());
            ::_exit(0);
        }
        ::close(go[0]);
        ::close(res[1]);
        kids.push_back({pid, go[1], res[0]});
    }
    bool all_ready = true;
    for (auto& k : kids) all_ready = read_byte(k.results) && all_ready;
    t0 = bench_clock::now();
    for (auto& k : kids) write_all(k.go, "G", 1);
    std::vector<proc_result> out;
    for (auto& k : kids) {
        proc_result r;
        auto bytes = read_all(k.results);
        if (!all_ready || !deserialize(bytes, r)) {
            r.errors = 1;
            r.first_error = "a client process did not connect or report";
        }
        out.push_back(std::move(r));
        ::close(k.go);
        ::close(k.results);
        int st = 0;
        ::waitpid(k.pid, &st, 0);
    }
    return out;
}

int run(run_args a) {
    auto it = workloads.find(a.name);
    if (it == workloads.end()) {
        std::fprintf(stderr, "lmx-bench: unknown workload %s\n", a.name.c_str());
        return 2;
    }
    workload w = it->second;
    if (a.in_flight) w.in_flight = a.in_flight;
    if (a.procs) w.procs = a.procs;

    std::vector<proc_result> parts;
    bench_clock::time_point t0;
    if (w.procs == 1) {
        parts.push_back(run_share(
            a, w, a.cycles, 0, [&] { t0 = bench_clock::now(); }, true));
    } else {
        parts = run_forked(a, w, t0);
    }

    proc_result all;
    std::uint64_t end = 0;
    for (auto& p : parts) {
        all.acquire_ns.insert(all.acquire_ns.end(), p.acquire_ns.begin(), p.acquire_ns.end());
        all.cycle_ns.insert(all.cycle_ns.end(), p.cycle_ns.begin(), p.cycle_ns.end());
        all.per_worker.insert(all.per_worker.end(), p.per_worker.begin(), p.per_worker.end());
        all.errors += p.errors;
        all.cpu_ns += p.cpu_ns;
        if (all.first_error.empty()) all.first_error = p.first_error;
        end = std::max(end, p.end_ns);
    }
    auto start_ns = static_cast<std::uint64_t>(t0.time_since_epoch().count());
    double wall_ms = end > start_ns ? static_cast<double>(end - start_ns) / 1e6 : 0;
    std::size_t cycles = all.cycle_ns.size();
    double rate = wall_ms > 0 ? static_cast<double>(cycles) / wall_ms : 0;
    auto acq = summarize(all.acquire_ns);
    auto cyc = summarize(all.cycle_ns);
    std::uint64_t fmin = all.per_worker.empty() ? 0 : *std::min_element(all.per_worker.begin(), all.per_worker.end());
    std::uint64_t fmax = all.per_worker.empty() ? 0 : *std::max_element(all.per_worker.begin(), all.per_worker.end());

    if (a.json) {
        std::printf(
            "{\"client\":\"lmx-cpp\",\"workload\":%s,\"url\":%s,\"cycles\":%zu,\"in_flight\":%u,\"procs\":%u,"
            "\"wall_ms\":%.3f,\"cycles_per_ms\":%.3f,\"acquire_us\":%s,\"cycle_us\":%s,"
            "\"fairness\":{\"workers\":%zu,\"min\":%llu,\"max\":%llu},\"cpu_ms\":%.3f,\"errors\":%llu,"
            "\"error\":%s}\n",
            json_string(a.name).c_str(), json_string(a.url).c_str(), cycles, w.in_flight, w.procs, wall_ms, rate,
            json_summary(acq).c_str(), json_summary(cyc).c_str(), all.per_worker.size(),
            static_cast<unsigned long long>(fmin), static_cast<unsigned long long>(fmax),
            static_cast<double>(all.cpu_ns) / 1e6, static_cast<unsigned long long>(all.errors),
            json_string(all.first_error).c_str());
    } else {
        std::printf(
            "%s %s: %zu cycles in %.1f ms = %.2f cycles/ms; acquire p50 %.1f us p99 %.1f us max %.1f us; "
            "cycle p50 %.1f us p99 %.1f us; per worker %llu..%llu (%zu workers)%s%s\n",
            a.name.c_str(), a.url.c_str(), cycles, wall_ms, rate, acq.p50_us, acq.p99_us, acq.max_us, cyc.p50_us,
            cyc.p99_us, static_cast<unsigned long long>(fmin), static_cast<unsigned long long>(fmax),
            all.per_worker.size(), all.errors ? "; ERROR " : "", all.first_error.c_str());
    }
    return all.errors ? 1 : 0;
}

struct scale_args {
    std::string url;
    std::string what = "locks";
    std::size_t count = 0;  // 0: 1,000,000 locks, 100,000 waiters, 10,000 connections
    unsigned window = 500;  // requests or connects in flight while building up
    bool json = false;
};

std::uint64_t rss_kb(long pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
    return 0;
}

struct scale_state {
    asio::io_context io{1};
    long pid = 0;
    std::uint64_t before_kb = 0, held_kb = 0;
    std::uint64_t errors = 0;
    std::string first_error;
    std::size_t reached = 0;  // locks held, waiters queued, connections open (as the broker counts)
    double build_ms = 0;

    void fail(const std::string& what, lmx::error_code ec) {
        if (errors++ == 0) first_error = what + ": " + ec.message();
    }
};

lmx::client_options scale_options(const std::string& url) {
    lmx::client_options co;
    co.url = url;
    co.ttl = lmx::no_expiry;
    co.request_timeout = 120s;
    co.connect_timeout = 60s;
    return co;
}

// Asks the broker for its stats; returns false (and records why) on failure.
asio::awaitable<bool> broker_stats(lmx::client& c, scale_state& st, boost::json::object& out) {
    auto asking = c.stats(use_tuple);
    auto [ec, obj] = co_await std::move(asking);
    if (ec) {
        st.fail("stats", ec);
        co_return false;
    }
    out = std::move(obj);
    co_return true;
}

std::uint64_t stat_u64(const boost::json::object& o, const char* name) {
    auto* v = o.if_contains(name);
    return v && v->is_number() ? v->to_number<std::uint64_t>() : 0;
}

// Polls the broker until `field` reaches `want` (or 120 s pass); returns the last value.
asio::awaitable<std::uint64_t> await_stat(lmx::client& c, scale_state& st, const char* field, std::uint64_t want) {
    auto deadline = bench_clock::now() + 120s;
    std::uint64_t have = 0;
    progress prog(std::string("scale ") + field);
    for (;;) {
        boost::json::object o;
        if (!co_await broker_stats(c, st, o)) co_return have;
        have = stat_u64(o, field);
        prog.update(have, want);
        // A refused request (a bound of the broker, say) ends the build-up: no use waiting.
        if (have >= want || st.errors || bench_clock::now() > deadline) break;
        asio::steady_timer t(st.io, 50ms);
        co_await t.async_wait(use_tuple);
    }
    prog.finish();
    co_return have;
}

// Runs `n` copies of the coroutine `make()` makes and waits for all of them to end.
template <class Make>
asio::awaitable<void> in_parallel(asio::io_context& io, std::size_t n, Make& make) {
    std::size_t finished = 0;
    asio::steady_timer all_done(io, bench_clock::time_point::max());
    for (std::size_t i = 0; i < n; ++i)
        asio::co_spawn(io, make(), [&](std::exception_ptr) {
            if (++finished == n) all_done.cancel();
        });
    if (n > 0) co_await all_done.async_wait(use_tuple);
}

asio::awaitable<void> scale_locks(lmx::client& c, scale_state& st, const scale_args& a) {
    std::size_t next = 0, done = 0;
    std::string prefix = "scale-" + std::to_string(::getpid()) + "-";
    progress prog("scale locks");
    auto filler = [&]() -> asio::awaitable<void> {
        while (next < a.count && st.errors == 0) {
            std::string key = prefix + std::to_string(next++);
            auto acquiring = c.acquire(std::move(key), lmx::acquire_options{}, use_tuple);
            auto [ec, guard] = co_await std::move(acquiring);
            if (ec) co_return st.fail("acquire", ec);
            guard.detach();  // held at the broker until this connection closes
            prog.update(++done, a.count);
        }
    };
    auto t0 = bench_clock::now();
    co_await in_parallel(st.io, std::min<std::size_t>(a.window, a.count), filler);
    prog.finish();
    st.build_ms = std::chrono::duration<double, std::milli>(bench_clock::now() - t0).count();
}

asio::awaitable<void> scale_waiters(lmx::client& holder, scale_state& st, const scale_args& a) {
    std::string key = "scale-waiters-" + std::to_string(::getpid());
    auto acquiring = holder.acquire(key, lmx::acquire_options{}, use_tuple);
    auto [ec, guard] = co_await std::move(acquiring);
    if (ec) co_return st.fail("acquire", ec);
    lmx::client waiter(st.io.get_executor(), scale_options(holder.options().url));
    auto connecting = waiter.connect(use_tuple);
    auto [cec] = co_await std::move(connecting);
    if (cec) co_return st.fail("connect", cec);
    auto t0 = bench_clock::now();
    lmx::acquire_options wait_long{.timeout = std::chrono::minutes(10)};
    for (std::size_t i = 0; i < a.count; ++i)
        waiter.acquire(key, wait_long, [&st](lmx::error_code e, lmx::lock_guard g) {
            // Every waiter ends when the connection closes below; a grant before that is a failure.
            if (!e || g) st.fail("waiter", make_error_code(lmx::errc::would_block));
        });
    st.reached = co_await await_stat(holder, st, "waiters", a.count);
    st.build_ms = std::chrono::duration<double, std::milli>(bench_clock::now() - t0).count();
    st.held_kb = rss_kb(st.pid);
    waiter.close();
    guard.detach();
}

asio::awaitable<void> scale_connections(lmx::client& probe, scale_state& st, const scale_args& a) {
    std::vector<std::unique_ptr<lmx::client>> clients;
    clients.reserve(a.count);
    for (std::size_t i = 0; i < a.count; ++i)
        clients.push_back(std::make_unique<lmx::client>(st.io.get_executor(), scale_options(probe.options().url)));
    std::size_t next = 0;
    progress prog("scale connections");
    auto t0 = bench_clock::now();
    auto opener = [&]() -> asio::awaitable<void> {
        while (next < clients.size()) {
            auto& c = *clients[next++];
            auto connecting = c.connect(use_tuple);
            auto [ec] = co_await std::move(connecting);
            if (ec) st.fail("connect", ec);
            prog.update(next, clients.size());
        }
    };
    co_await in_parallel(st.io, std::min<std::size_t>(a.window, a.count), opener);
    prog.finish();
    st.build_ms = std::chrono::duration<double, std::milli>(bench_clock::now() - t0).count();
    // The probe connection is one of those the broker counts.
    st.reached = co_await await_stat(probe, st, "connections", a.count + 1) - 1;
    st.held_kb = rss_kb(st.pid);
    for (auto& c : clients) c->close();
}

int scale(scale_args a) {
    raise_open_files_limit();
    static const std::map<std::string, std::size_t> defaults = {
        {"locks", 1'000'000}, {"waiters", 100'000}, {"connections", 10'000}};
    if (!defaults.contains(a.what)) {
        std::fprintf(stderr, "lmx-bench: unknown scale figure %s\n", a.what.c_str());
        return 2;
    }
    if (a.count == 0) a.count = defaults.at(a.what);
    scale_state st;
    lmx::client probe(st.io.get_executor(), scale_options(a.url));
    asio::co_spawn(
        st.io,
        [&]() -> asio::awaitable<void> {
            boost::json::object o;
            if (!co_await broker_stats(probe, st, o)) co_return;
            st.pid = static_cast<long>(stat_u64(o, "pid"));
            st.before_kb = rss_kb(st.pid);
            if (a.what == "locks") {
                co_await scale_locks(probe, st, a);
                st.reached = co_await await_stat(probe, st, "holders", a.count);
                st.held_kb = rss_kb(st.pid);
            } else if (a.what == "waiters") {
                co_await scale_waiters(probe, st, a);
            } else {
                co_await scale_connections(probe, st, a);
            }
            probe.close();
        },
        asio::detached);
    st.io.run();
    if (st.reached < a.count && st.errors == 0) {
        st.errors = 1;
        st.first_error = "the broker reports " + std::to_string(st.reached) + " of " + std::to_string(a.count);
    }
    double per_item = a.count ? (static_cast<double>(st.held_kb) - static_cast<double>(st.before_kb)) * 1024.0 /
                                    static_cast<double>(a.count)
                              : 0;
    if (a.json) {
        std::printf(
            "{\"client\":\"lmx-cpp\",\"scale\":%s,\"url\":%s,\"count\":%zu,\"reached\":%zu,\"broker_pid\":%ld,"
            "\"rss_before_kb\":%llu,\"rss_held_kb\":%llu,\"bytes_per_item\":%.1f,\"build_ms\":%.1f,"
            "\"errors\":%llu,\"error\":%s}\n",
            json_string(a.what).c_str(), json_string(a.url).c_str(), a.count, st.reached, st.pid,
            static_cast<unsigned long long>(st.before_kb), static_cast<unsigned long long>(st.held_kb), per_item,
            st.build_ms, static_cast<unsigned long long>(st.errors), json_string(st.first_error).c_str());
    } else {
        std::printf(
            "scale %s %s: %zu of %zu held; broker RSS %.1f MB (%.1f MB before, %.0f bytes each), built in %.0f "
            "ms%s%s\n",
            a.what.c_str(), a.url.c_str(), st.reached, a.count, static_cast<double>(st.held_kb) / 1024.0,
            static_cast<double>(st.before_kb) / 1024.0, per_item, st.build_ms, st.errors ? "; ERROR " : "",
            st.first_error.c_str());
    }
    return st.errors ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"lmx-bench: lock workloads and scale figures against a running lmx broker"};
    app.require_subcommand(1);

    run_args ra;
    auto* run_cmd = app.add_subcommand("run", "Run one workload and print its figures");
    run_cmd->add_option("--url", ra.url, "Broker URL: tcp://HOST:PORT, unix:///PATH, ws://HOST:PORT/PATH")->required();
    run_cmd->add_option("-w,--workload", ra.name, "w1, w2, w3, w4 or lat")->default_val("w1");
    run_cmd->add_option("-n,--cycles", ra.cycles, "Acquire+release cycles in all")->default_val(10000);
    run_cmd->add_option("--in-flight", ra.in_flight, "Workers per process (default: the workload's)");
    run_cmd->add_option("--procs", ra.procs, "Client processes (default: the workload's)");
    run_cmd->add_option("--prefix", ra.prefix,
                        "Key prefix, for runs that share keys (default: one of the process's own)");
    run_cmd->add_flag("--json", ra.json, "One JSON object per run on stdout");

    scale_args sa;
    auto* scale_cmd = app.add_subcommand("scale", "Hold many locks, waiters or connections and report broker RSS");
    scale_cmd->add_option("--url", sa.url, "Broker URL (the broker must run on this machine)")->required();
    scale_cmd->add_option("--what", sa.what, "locks, waiters or connections")->default_val("locks");
    scale_cmd->add_option("-n,--count", sa.count, "How many (default 1,000,000 / 100,000 / 10,000)");
    scale_cmd->add_option("--window", sa.window, "Requests or connects in flight while building up")->default_val(500);
    scale_cmd->add_flag("--json", sa.json, "One JSON object on stdout");

    CLI11_PARSE(app, argc, argv);
    try {
        if (run_cmd->parsed()) return run(ra);
        return scale(sa);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lmx-bench: %s\n", e.what());
        return 1;
    }
}
