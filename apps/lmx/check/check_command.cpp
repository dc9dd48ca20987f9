// `lmx check`: runs client processes doing random lock operations against a broker while killing
// clients and restarting the broker, records everything, and checks the history for violations
// of lmx's guarantees (docs/check.md).

#include "../commands.hpp"
#include "check.hpp"
#include "history.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <poll.h>
#include <random>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lmx::app {

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using check::mono_ns;

struct check_args {
    std::string url;
    int clients = 4;
    std::uint64_t ops = 20000;
    std::string duration;
    int keys = 6;
    int connections = 2;
    int depth = 6;
    std::optional<std::uint64_t> seed;
    bool no_client_kills = false;
    bool no_broker_restarts = false;
    int kill_every_ms = 1500;
    int restart_every_ms = 4000;
    std::string history;
    std::string dir;
    std::vector<std::string> broker_args;
    std::string broker_binary;
    std::vector<std::string> analyze;
    std::string peer = "lmx";
    bool json = false;
    bool quiet = false;
    // A client process (started by the coordinator).
    bool worker = false;
    check::worker_config wc;
};

// "90s", "10m", "1h", "500ms" or plain seconds.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& s) {
    std::size_t used = 0;
    double v = 0;
    try {
        v = std::stod(s, &used);
    } catch (...) {
        return std::nullopt;
    }
    std::string unit = s.substr(used);
    double ms;
    if (unit.empty() || unit == "s")
        ms = v * 1000;
    else if (unit == "ms")
        ms = v;
    else if (unit == "m" || unit == "min")
        ms = v * 60'000;
    else if (unit == "h")
        ms = v * 3'600'000;
    else
        return std::nullopt;
    if (!(ms > 0)) return std::nullopt;
    return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

// The running binary itself, even when its file was replaced meanwhile (an upgrade during a long
// run): the child of a fork still sees the parent's image there.
std::string self_exe() { return "/proc/self/exe"; }

// Starts `args` with stdout and stderr appended to `log`; it dies with us.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid != 0) return pid;
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
}

int wait_exit(pid_t pid, std::chrono::milliseconds wait) {
    auto until = std::chrono::steady_clock::now() + wait;
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 || std::chrono::steady_clock::now() > until) return -1;
        ::usleep(2000);
    }
}

// The broker's watch stream, recorded as it comes.
class watcher {
public:
    watcher(check::history_file& h) : hist_(h) {}
    ~watcher() { close(); }

    // Connects, says hello and subscribes to every key; false when the broker does not answer.
    bool open(const std::string& url, std::chrono::milliseconds wait) {
        close();
        auto until = std::chrono::steady_clock::now() + wait;
        while ((fd_ = check::connect_to(url)) < 0) {
            if (std::chrono::steady_clock::now() > until) return false;
            ::usleep(10'000);
        }
        ++session_;
        hist_.record("watch", session_, "open");
        send(json::object{{"type", "hello"},
                          {"uuid", "watch-hello-" + std::to_string(session_)},
                          {"client", "lmx-check"},
                          {"protocol", 1}});
        send(json::object{{"type", "watch"}, {"uuid", "watch-" + std::to_string(session_)}});
        ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
        while (!subscribed_) {
            if (std::chrono::steady_clock::now() > until || !pump(20)) return false;
        }
        return true;
    }

    // Reads what arrived within `timeout_ms`; false once the stream has ended.
    bool pump(int timeout_ms) {
        if (fd_ < 0) return false;
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) <= 0) return true;
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0) {
                in_.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 && errno == EINTR) continue;
            deliver();
            close();
            return false;
        }
        deliver();
        return true;
    }

    void close() {
        if (fd_ < 0) return;
        ::close(fd_);
        fd_ = -1;
        subscribed_ = false;
        hist_.record("watch", session_, "close", {}, "lost");
    }

private:
    void send(const json::object& m) {
        std::string frame = json::serialize(m);
        hist_.record("watch", session_, "send", frame);
        frame += '\n';
        (void)!::send(fd_, frame.data(), frame.size(), MSG_NOSIGNAL);
    }
    void deliver() {
        std::size_t start = 0;
        for (std::size_t nl; (nl = in_.find('\n', start)) != std::string::npos; start = nl + 1) {
            std::string_view line(in_.data() + start, nl - start);
            if (line.empty()) continue;
            hist_.record("watch", session_, "recv", line);
            if (!subscribed_ && line.find("\"watching\":true") != std::string_view::npos) subscribed_ = true;
        }
        in_.erase(0, start);
    }

    check::history_file& hist_;
    int fd_ = -1;
    int session_ = 0;
    bool subscribed_ = false;
    std::string in_;
};

class coordinator {
public:
    explicit coordinator(check_args& a) : a_(a) {}

    int run() {
        const auto limit = a_.duration.empty() ? std::nullopt : parse_duration(a_.duration);
        if (!a_.duration.empty() && !limit) return usage("--duration must look like 90s, 10m or 1h");
        for (std::size_t at = 0; !a_.url.empty() && at <= a_.url.size();) {
            const std::size_t end = std::min(a_.url.find(',', at), a_.url.size());
            urls_.push_back(a_.url.substr(at, end - at));
            at = end + 1;
        }
        for (const auto& u : urls_)
            if (!u.starts_with("unix://") && !u.starts_with("tcp://"))
                return usage("--url must be unix:///PATH or tcp://HOST:PORT, or several separated by commas, not '" +
                             u + "'");
        own_broker_ = urls_.empty();
        const auto seed = a_.seed.value_or(
            static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) % 1'000'000'007);
        rng_.seed(seed);
        if (a_.dir.empty()) {
            std::string tmpl = (fs::temp_directory_path() / "lmx-check-XXXXXX").string();
            if (!::mkdtemp(tmpl.data()))
                return fail("cannot create a work directory: " + std::string(std::strerror(errno)));
            dir_ = tmpl;
            temp_dir_ = true;
        } else {
            dir_ = a_.dir;
            fs::create_directories(dir_ + "/hist");
        }
        fs::create_directories(dir_ + "/hist");
        const std::string prefix = "chk" + std::to_string(seed % 100000) + "-";

        if (!make_board()) return fail("cannot create the board file in " + dir_);
        hist_ = std::make_unique<check::history_file>(dir_ + "/hist/check.jsonl");
        watch_ = std::make_unique<watcher>(*hist_);
        if (own_broker_) {
            if (!start_broker()) return fail("the broker did not start; its log: " + dir_ + "/broker.log");
        } else if (!watch_->open(urls_.front(), std::chrono::seconds(10))) {
            return fail("no broker answers at " + urls_.front());
        }
        // With several brokers (sharing their state through etcd), client i talks to broker i mod n
        // and the watcher to the first: one broker's stream carries every broker's events.
        if (own_broker_) urls_ = {"unix://" + dir_ + "/broker.sock"};
        say("seed " + std::to_string(seed) + ", " + std::to_string(a_.clients) + " clients, work dir " + dir_);

        workers_.resize(static_cast<std::size_t>(a_.clients));
        for (int i = 0; i < a_.clients; ++i) spawn_worker(i, prefix, seed);

        const auto t0 = std::chrono::steady_clock::now();
        auto next_kill = t0 + exp_ms(a_.kill_every_ms);
        auto next_restart = t0 + exp_ms(a_.restart_every_ms);
        auto next_progress = t0 + std::chrono::seconds(2);
        for (;;) {
            if (!watch_->pump(10) && !restart_pending_) {
                if (!own_broker_) return fail("the broker at " + urls_.front() + " closed the watch connection");
                return fail("the broker died by itself; its log: " + dir_ + "/broker.log");
            }
            const auto now = std::chrono::steady_clock::now();
            const std::uint64_t ops = total_ops();
            if (ops >= a_.ops && !limit) break;
            if (limit && now - t0 >= *limit) break;
            if (now >= next_progress) {
                progress(ops, now - t0);
                next_progress = now + std::chrono::seconds(2);
            }
            if (!a_.no_client_kills && now >= next_kill) {
                kill_worker(pick(a_.clients), prefix, seed);
                next_kill = now + exp_ms(a_.kill_every_ms);
            }
            if (own_broker_ && !a_.no_broker_restarts && now >= next_restart) {
                if (!restart_broker())
                    return fail("the broker did not come back after a restart; its log: " + dir_ + "/broker.log");
                next_restart = std::chrono::steady_clock::now() + exp_ms(a_.restart_every_ms);
            }
            if (auto bad = reap(); !bad.empty()) return fail(bad);
        }
        progress(total_ops(), std::chrono::steady_clock::now() - t0);
        if (!finish_workers()) return fail("client processes did not finish; see " + dir_ + "/clients.log");
        watch_->close();
        stop_broker();
        watch_.reset();
        hist_.reset();
        return analyze_and_report();
    }

private:
    void say(const std::string& s) {
        if (!a_.quiet) std::fprintf(stderr, "lmx check: %s\n", s.c_str());
    }
    int fail(const std::string& why) {
        std::fprintf(stderr, "lmx check: %s\n", why.c_str());
        cleanup_processes();
        return exit_unreachable;
    }
    int usage(const std::string& why) {
        std::fprintf(stderr, "lmx check: %s\n", why.c_str());
        return exit_usage;
    }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
    std::chrono::milliseconds exp_ms(int mean) {
        return std::chrono::milliseconds(
            static_cast<std::int64_t>(std::exponential_distribution<double>(1.0 / mean)(rng_)) + 1);
    }

    bool make_board() {
        const std::string path = dir_ + "/board";
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) return false;
        bool ok = ::ftruncate(fd, sizeof(check::board)) == 0;
        void* p = ok ? ::mmap(nullptr, sizeof(check::board), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
        ::close(fd);
        if (p == MAP_FAILED) return false;
        board_ = static_cast<check::board*>(p);
        return true;
    }

    std::uint64_t total_ops() const {
        std::uint64_t n = 0;
        for (auto& s : board_->slots) n += s.ops.load(std::memory_order_relaxed);
        return n;
    }

    void progress(std::uint64_t ops, std::chrono::steady_clock::duration elapsed) {
        say(std::to_string(ops) + (a_.duration.empty() ? "/" + std::to_string(a_.ops) : std::string()) +
            " operations, " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(elapsed).count()) +
            " s, broker restarts " + std::to_string(restarts_) + ", client kills " + std::to_string(kills_));
    }

    // The new broker listens on a side path until the watcher has subscribed, then the path is
    // renamed to the one clients use: no grant happens before the watch stream sees it.
    bool start_broker() {
        const std::string side = dir_ + "/broker.sock.next";
        std::vector<std::string> args = {a_.broker_binary.empty() ? self_exe() : a_.broker_binary,
                                         "broker",
                                         "--listen",
                                         "unix://" + side,
                                         "--state-dir",
                                         dir_ + "/state",
                                         "--log-level",
                                         "warn"};
        args.insert(args.end(), a_.broker_args.begin(), a_.broker_args.end());
        broker_pid_ = spawn(args, dir_ + "/broker.log");
        if (!watch_->open("unix://" + side, std::chrono::seconds(20))) return false;
        if (::rename(side.c_str(), (dir_ + "/broker.sock").c_str()) != 0) return false;
        hist_->record("check", 0, "broker-start", {}, {}, "\"pid\":" + std::to_string(broker_pid_));
        return true;
    }

    bool restart_broker() {
        restart_pending_ = true;
        hist_->record("check", 0, "broker-kill", {}, {}, "\"pid\":" + std::to_string(broker_pid_));
        ::kill(broker_pid_, SIGKILL);
        wait_exit(broker_pid_, std::chrono::seconds(10));
        watch_->close();
        ++restarts_;
        bool ok = start_broker();
        restart_pending_ = false;
        return ok;
    }

    void stop_broker() {
        if (!own_broker_ || broker_pid_ <= 0) return;
        ::kill(broker_pid_, SIGTERM);
        if (wait_exit(broker_pid_, std::chrono::seconds(10)) < 0) {
            ::kill(broker_pid_, SIGKILL);
            wait_exit(broker_pid_, std::chrono::seconds(5));
        }
        broker_pid_ = -1;
    }

    struct worker_proc {
        pid_t pid = -1;
        int gen = 0;
        std::string id;
    };

    void spawn_worker(int slot, const std::string& prefix, std::uint64_t seed) {
        worker_proc& w = workers_[static_cast<std::size_t>(slot)];
        const std::string& url = urls_[static_cast<std::size_t>(slot) % urls_.size()];
        ++w.gen;
        w.id = "w" + std::to_string(slot) + "." + std::to_string(w.gen);
        std::vector<std::string> args = {self_exe(),
                                         "check",
                                         "--worker",
                                         "--worker-id",
                                         w.id,
                                         "--worker-slot",
                                         std::to_string(slot),
                                         "--worker-url",
                                         url,
                                         "--worker-board",
                                         dir_ + "/board",
                                         "--worker-history",
                                         dir_ + "/hist/" + w.id + ".jsonl",
                                         "--worker-prefix",
                                         prefix,
                                         "--seed",
                                         std::to_string(seed * 1'000'003 + static_cast<std::uint64_t>(slot) * 7919 +
                                                        static_cast<std::uint64_t>(w.gen)),
                                         "--keys",
                                         std::to_string(a_.keys),
                                         "--connections",
                                         std::to_string(a_.connections),
                                         "--depth",
                                         std::to_string(a_.depth)};
        w.pid = spawn(args, dir_ + "/clients.log");
    }

    void kill_worker(int slot, const std::string& prefix, std::uint64_t seed) {
        worker_proc& w = workers_[static_cast<std::size_t>(slot)];
        if (w.pid > 0) {
            // Recorded first: from this moment the client can no longer believe it holds anything.
            hist_->record("check", 0, "worker-kill", {}, {}, "\"worker\":\"" + w.id + "\"");
            ::kill(w.pid, SIGKILL);
            wait_exit(w.pid, std::chrono::seconds(10));
            ++kills_;
        }
        spawn_worker(slot, prefix, seed);
    }

    // A client process that ended by itself before the stop is a failure of the checker.
    std::string reap() {
        for (auto& w : workers_) {
            if (w.pid <= 0) continue;
            int status = 0;
            if (::waitpid(w.pid, &status, WNOHANG) == w.pid) {
                w.pid = -1;
                return "client process " + w.id + " ended early (status " + std::to_string(status) + "); see " + dir_ +
                       "/clients.log";
            }
        }
        return {};
    }

    bool finish_workers() {
        board_->stop.store(1);
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(40);
        bool all = true;
        for (auto& w : workers_) {
            while (w.pid > 0) {
                int status = 0;
                if (::waitpid(w.pid, &status, WNOHANG) == w.pid) {
                    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) all = false;
                    w.pid = -1;
                    break;
                }
                if (std::chrono::steady_clock::now() > until) {
                    ::kill(w.pid, SIGKILL);
                    wait_exit(w.pid, std::chrono::seconds(5));
                    w.pid = -1;
                    all = false;
                    break;
                }
                watch_->pump(5);  // the broker must not cut the watcher off while clients drain
            }
        }
        return all;
    }

    void cleanup_processes() {
        for (auto& w : workers_)
            if (w.pid > 0) {
                ::kill(w.pid, SIGKILL);
                wait_exit(w.pid, std::chrono::seconds(5));
                w.pid = -1;
            }
        if (own_broker_ && broker_pid_ > 0) {
            ::kill(broker_pid_, SIGKILL);
            wait_exit(broker_pid_, std::chrono::seconds(5));
            broker_pid_ = -1;
        }
    }

    int analyze_and_report() {
        std::vector<std::string> files;
        for (auto& e : fs::directory_iterator(dir_ + "/hist")) files.push_back(e.path().string());
        std::sort(files.begin(), files.end());
        const std::string out = a_.history.empty() ? dir_ + "/history.jsonl" : a_.history;
        auto s = merge_and_analyze(files, out, {.broker_stream = true});
        report(s);
        const bool bad = s.violation_count > 0;
        if (bad || !a_.history.empty() || !temp_dir_) {
            std::fprintf(stderr, "lmx check: history: %s\n", out.c_str());
        } else {
            std::error_code ec;
            fs::remove_all(dir_, ec);
        }
        return bad ? 1 : 0;
    }

public:
    static check::summary merge_and_analyze(const std::vector<std::string>& files, const std::string& out,
                                            check::analyze_options opt) {
        std::ofstream o(out, std::ios::trunc);
        check::analyzer an(opt);
        check::merge_histories(files, [&](const std::string& line) {
            o << line << '\n';
            an.add(line);
        });
        return an.finish();
    }

    void report(const check::summary& s) {
        if (a_.json)
            std::printf("%s\n", check::summary_json(s).c_str());
        else
            std::printf("%s", check::format_summary(s).c_str());
        std::fflush(stdout);  // whole, before anything on stderr (one pipe may carry both)
    }

private:
    check_args& a_;
    bool own_broker_ = true;
    std::vector<std::string> urls_;  // the brokers the clients talk to
    bool temp_dir_ = false;
    bool restart_pending_ = false;
    std::string dir_;
    std::mt19937_64 rng_;
    check::board* board_ = nullptr;
    std::unique_ptr<check::history_file> hist_;
    std::unique_ptr<watcher> watch_;
    pid_t broker_pid_ = -1;
    std::vector<worker_proc> workers_;
    int restarts_ = 0;
    int kills_ = 0;
};

int run_check(check_args& a) {
    if (a.worker) {
        a.wc.seed = a.seed.value_or(1);
        a.wc.keys = a.keys;
        a.wc.sessions = a.connections;
        a.wc.depth = a.depth;
        try {
            return check::run_worker(a.wc);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "lmx check client %s: %s\n", a.wc.id.c_str(), e.what());
            return 3;
        }
    }
    if (!a.analyze.empty()) {
        check::analyze_options opt{.broker_stream = a.peer == "lmx"};
        check::summary s;
        try {
            s = check::analyze_files(a.analyze, opt);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "lmx check: %s\n", e.what());
            return exit_usage;
        }
        if (a.json)
            std::printf("%s\n", check::summary_json(s).c_str());
        else
            std::printf("%s", check::format_summary(s).c_str());
        return s.violation_count ? 1 : 0;
    }
    std::signal(SIGPIPE, SIG_IGN);
    try {
        coordinator c(a);
        return c.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lmx check: %s\n", e.what());
        return exit_unreachable;
    }
}

}  // namespace

void add_check_command(CLI::App& app, action_setter set_action) {
    auto a = std::make_shared<check_args>();
    auto* cmd = app.add_subcommand(
        "check",
        "Run random clients against a broker with faults (client kills, broker restarts) and check the "
        "history for violations of lmx's guarantees; exit 1 on any");
    cmd->add_option("--url", a->url,
                    "Check a running broker (unix:// or tcp://), or several sharing their state through etcd "
                    "(separated by commas); no broker restarts then (default: start one)")
        ->type_name("URL");
    cmd->add_option("--clients", a->clients, "Client processes")
        ->default_val(4)
        ->check(CLI::Range(1, check::max_workers));
    cmd->add_option("--ops", a->ops, "Stop after this many operations in all")
        ->default_val(20000)
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
    cmd->add_option("--duration", a->duration, "Stop after this long instead of --ops, e.g. 90s, 10m, 1h")
        ->type_name("TIME");
    cmd->add_option("--keys", a->keys, "Keys the clients contend for (their max is 1, 2 or 3)")
        ->default_val(6)
        ->check(CLI::Range(1, 10000));
    cmd->add_option("--connections", a->connections, "Connections per client process")
        ->default_val(2)
        ->check(CLI::Range(1, 64));
    cmd->add_option("--depth", a->depth, "Requests in flight per connection")
        ->default_val(6)
        ->check(CLI::Range(1, 1000));
    cmd->add_option("--seed", a->seed, "Random seed (default: from the clock; printed to reproduce a run)");
    cmd->add_flag("--no-client-kills", a->no_client_kills, "Do not kill client processes (kill -9)");
    cmd->add_flag("--no-broker-restarts", a->no_broker_restarts, "Do not kill and restart the broker");
    cmd->add_option("--kill-every", a->kill_every_ms, "Mean ms between client kills")
        ->default_val(1500)
        ->check(CLI::Range(10, 3'600'000))
        ->type_name("MS");
    cmd->add_option("--restart-every", a->restart_every_ms, "Mean ms between broker restarts")
        ->default_val(4000)
        ->check(CLI::Range(100, 3'600'000))
        ->type_name("MS");
    cmd->add_option("--history", a->history,
                    "Write the history (JSON lines) to FILE (default: in the work dir, kept when violations are found)")
        ->type_name("FILE");
    cmd->add_option("--dir", a->dir, "Work directory, kept (default: a new temporary one)")->type_name("DIR");
    cmd->add_option("--broker-arg", a->broker_args, "Extra argument for the broker this command starts, repeatable")
        ->type_name("ARG")
        ->allow_extra_args(false);
    cmd->add_option("--broker", a->broker_binary, "The lmx binary to run as the broker (default: this one)")
        ->type_name("PATH")
        ->check(CLI::ExistingFile);
    cmd->add_option("--analyze", a->analyze, "Only check recorded history files")
        ->type_name("FILE")
        ->check(CLI::ExistingFile);
    cmd->add_option("--peer", a->peer,
                    "With --analyze: the broker the history comes from; other than lmx, only the checks that need no "
                    "watch stream or fencing tokens run")
        ->default_val("lmx")
        ->check(CLI::IsMember({"lmx", "live-mutex"}));
    cmd->add_flag("--json", a->json, "Print the summary as one JSON object");
    cmd->add_flag("-q,--quiet", a->quiet, "No progress on stderr");
    // The coordinator starts client processes with these.
    cmd->add_flag("--worker", a->worker)->group("");
    cmd->add_option("--worker-id", a->wc.id)->group("");
    cmd->add_option("--worker-slot", a->wc.slot)->group("");
    cmd->add_option("--worker-url", a->wc.url)->group("");
    cmd->add_option("--worker-board", a->wc.board)->group("");
    cmd->add_option("--worker-history", a->wc.history)->group("");
    cmd->add_option("--worker-prefix", a->wc.prefix)->group("");
    cmd->callback([a, set_action] { set_action([a] { return run_check(*a); }); });
}

}  // namespace lmx::app
