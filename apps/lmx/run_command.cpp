// lmx run KEY -- COMMAND: flock(1) across machines. Waits for the lock, runs COMMAND with the
// lock id and fencing token in its environment, renews the lease while it runs, forwards
// signals to it, releases when it exits and exits with its status.

#include "client_common.hpp"
#include "progress.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <CLI/CLI.hpp>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace lmx::app {

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

struct run_args {
    client_args conn;
    lock_args lock;
    std::int64_t ttl_ms = 10000;
    bool no_expiry = false;
    std::string on_lost = "none";
    int conflict_exit_code = exit_not_obtained;
    std::vector<std::string> command;
};

// Signals lmx run takes over: it forwards the first six to COMMAND and reaps COMMAND on SIGCHLD.
constexpr int handled_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};

const std::map<std::string, int> signal_names = {{"none", 0},       {"TERM", SIGTERM}, {"KILL", SIGKILL},
                                                 {"INT", SIGINT},   {"HUP", SIGHUP},   {"QUIT", SIGQUIT},
                                                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};

// The signals to take over: those this process was started ignoring (nohup, `cmd &` in a
// script) stay ignored, except SIGCHLD, which lmx needs.
sigset_t handled_set() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : handled_signals) {
        struct sigaction old {};
        if (s != SIGCHLD && ::sigaction(s, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaddset(&set, s);
    }
    return set;
}

// Everything the signal reader and the main flow share; outlives both.
struct run_state {
    explicit run_state(asio::any_io_executor ex) : signals(ex), wake(ex) {}
    asio::posix::stream_descriptor signals;  // a signalfd
    asio::steady_timer wake;
    asio::cancellation_signal stop_waiting;
    pid_t child = -1;
    bool child_done = false;
    // Reaps COMMAND if it has ended; true once it has.
    bool reap() {
        if (child <= 0 || child_done) return child_done;
        pid_t r = ::waitpid(child, &child_status, WNOHANG);
        if (r == child || (r < 0 && errno == ECHILD)) {
            child_done = true;
            wake.cancel();
        }
        return child_done;
    }
    int child_status = 0;
    int interrupted_by = 0;  // a signal that arrived while waiting for the lock
    error_code ended;        // why the hold ended (async_wait_lost), empty while it holds
};

void on_signal(run_state& s, const signalfd_siginfo& info) {
    int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) {
        s.reap();
        return;
    }
    if (s.child <= 0) {
        // Still waiting for the lock: a stop signal withdraws the request.
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) {
            s.interrupted_by = sig;
            s.stop_waiting.emit(asio::cancellation_type::terminal);
        }
        return;
    }
    // A signal the terminal sent to the whole foreground process group has reached COMMAND
    // already; anything else (kill PID) is passed on. (kill -SIG -PGID reaches COMMAND twice.)
    if (info.ssi_code != SI_KERNEL && !s.child_done) ::kill(s.child, sig);
}

asio::awaitable<void> read_signals(std::shared_ptr<run_state> s) {
    signalfd_siginfo info{};
    for (;;) {
        auto [ec, n] = co_await s->signals.async_read_some(asio::buffer(&info, sizeof info), use_tuple);
        if (ec) co_return;
        if (n == sizeof info) on_signal(*s, info);
    }
}

// Forks and execs COMMAND with the lock in its environment. Returns the pid, or -1 with
// `error` set (errno of the failed exec, reported through a close-on-exec pipe).
pid_t start_command(const std::vector<std::string>& command, const std::vector<std::string>& extra_env,
                    int death_signal, int& error) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
        std::string_view kv(*e);
        bool ours = false;
        for (auto& x : extra_env)
            ours = ours || kv.substr(0, x.find('=') + 1) == std::string_view(x).substr(0, x.find('=') + 1);
        if (!ours) env_strings.emplace_back(kv);
    }
    env_strings.insert(env_strings.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> envp, argv;
    for (auto& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    for (auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
        error = errno;
        return -1;
    }
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        error = errno;
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        // The child: default dispositions and an empty mask, as if started by a shell.
        ::signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        // COMMAND must not hold the broker connection (or anything else of ours) open: when lmx
        // dies, the broker has to see the connection close and free the lock.
        ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
        // With --on-lost, losing lmx is losing the lock.
        if (death_signal) {
            ::prctl(PR_SET_PDEATHSIG, death_signal);
            if (::getppid() != parent) ::raise(death_signal);
        }
        ::execvpe(argv[0], argv.data(), envp.data());
        int e = errno;
        (void)!::write(pipefd[1], &e, sizeof e);
        ::_exit(127);
    }
    ::close(pipefd[1]);
    int e = 0;
    ssize_t n;
    while ((n = ::read(pipefd[0], &e, sizeof e)) < 0 && errno == EINTR) {}
    ::close(pipefd[0]);
    if (n == sizeof e) {
        ::waitpid(pid, nullptr, 0);
        error = e;
        return -1;
    }
    return pid;
}

asio::awaitable<int> run_locked(const run_args& a, lmx::client& c) {
    auto s = std::make_shared<run_state>(c.get_executor());
    sigset_t set = handled_set();
    int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) {
        std::fprintf(stderr, "lmx run: signalfd: %s\n", std::strerror(errno));
        co_return exit_usage;
    }
    s->signals.assign(fd);
    // An exception there is lmx's own failure: it goes to whoever runs the io_context.
    asio::co_spawn(c.get_executor(), read_signals(s), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    });
    struct stop_reading {
        run_state& st;
        ~stop_reading() {
            boost::system::error_code ignored;
            st.signals.close(ignored);
            st.wake.cancel();
        }
    } stopper{*s};

    // 1. The lock.
    const std::string& key = a.lock.key;
    bool expires = !a.no_expiry;
    std::chrono::milliseconds ttl{a.ttl_ms};
    acquire_options o = a.lock.options(expires ? ttl : no_expiry, false);
    o.auto_renew = expires;  // the client renews a third of the way through, as long as it holds
    waiting_notice notice(c.get_executor(), key);
    o.on_queued = notice.on_queued();
    lmx::diagnostics diag;
    o.diag = &diag;
    auto token = asio::bind_cancellation_slot(s->stop_waiting.slot(), use_tuple);
    auto [ec, guard] = co_await c.acquire(key, o, token);
    notice.done();
    if (s->interrupted_by) {
        std::fprintf(stderr, "lmx run: interrupted while waiting for '%s'; nothing was run\n", key.c_str());
        co_return 128 + s->interrupted_by;
    }
    if (ec) {
        int code = report("run", ec, c.options().url, "lock on " + quoted(key), diag.message);
        co_return code == exit_not_obtained ? a.conflict_exit_code : code;
    }

    // 2. COMMAND.
    std::vector<std::string> env{"LMX_LOCK_KEY=" + key, "LMX_LOCK_ID=" + guard.id(),
                                 "LMX_FENCING_TOKEN=" + std::to_string(guard.fencing_token())};
    int exec_error = 0;
    int lost_signal = signal_names.at(a.on_lost);
    pid_t pid = start_command(a.command, env, lost_signal, exec_error);
    if (pid < 0) {
        std::fprintf(stderr, "lmx run: cannot run '%s': %s\n", a.command.front().c_str(), std::strerror(exec_error));
        co_await guard.release(use_tuple);
        co_return exec_error == ENOENT ? 127 : 126;
    }
    s->child = pid;
    // A SIGCHLD that came before `child` was set is still pending in the signalfd; check anyway.
    s->reap();

    // 3. The client keeps the lease while COMMAND runs, and says when the hold ends anyway: its
    // lease ran out (counted from when the last renewal was sent, so a renewal that cannot get
    // through is a loss no later than the broker's own expiry), it was forced, or the
    // connection dropped.
    guard.async_wait_lost([s](error_code why) {
        s->ended = why;
        s->wake.cancel();
    });
    bool lost = false;
    auto lose = [&](const std::string& why) {
        lost = true;
        if (lost_signal)
            std::fprintf(stderr, "lmx run: lost the lock on '%s' (%s); sending SIG%s to %s\n", key.c_str(), why.c_str(),
                         a.on_lost.c_str(), a.command.front().c_str());
        else
            std::fprintf(stderr, "lmx run: lost the lock on '%s' (%s); %s keeps running without it\n", key.c_str(),
                         why.c_str(), a.command.front().c_str());
        if (lost_signal && !s->child_done) ::kill(pid, lost_signal);
    };
    while (!s->child_done) {
        if (!lost && s->ended && s->ended != errc::released) {
            if (s->ended == errc::lease_expired)
                lose("its lease ran out before it could be renewed");
            else if (s->ended == errc::forced)
                lose("another client forced it");
            else if (s->ended == errc::connection_lost)
                lose("the connection to the broker dropped");
            else
                lose(s->ended.message());
        }
        s->wake.expires_at(std::chrono::steady_clock::time_point::max());
        co_await s->wake.async_wait(use_tuple);
    }

    // 4. Release and pass COMMAND's status on.
    if (!lost && guard.owns_lock()) {
        auto [rec] = co_await guard.release(use_tuple);
        if (rec) std::fprintf(stderr, "lmx run: releasing '%s' failed: %s\n", key.c_str(), rec.message().c_str());
    }
    int st = s->child_status;
    if (WIFEXITED(st)) co_return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) co_return 128 + WTERMSIG(st);
    co_return exit_not_obtained;
}

int run_run(const run_args& a) {
    if (a.command.empty()) {
        std::fprintf(stderr, "lmx run: no COMMAND given (usage: lmx run KEY [OPTIONS] -- COMMAND [ARGS...])\n");
        return exit_usage;
    }
    // Blocked before any thread or child exists, so that every such signal reaches the signalfd.
    ::signal(SIGCHLD, SIG_DFL);  // an inherited SIG_IGN would reap COMMAND behind our back
    sigset_t set = handled_set();
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    return run_client("run", a.conn, {}, [&a](lmx::client& c) { return run_locked(a, c); });
}

}  // namespace

void add_run_command(CLI::App& app, action_setter set_action) {
    auto a = std::make_shared<run_args>();
    auto* cmd = app.add_subcommand(
        "run", "Run COMMAND while holding a lock (like flock(1) across machines); exits with its status");
    add_lock_flags(cmd, a->lock);
    cmd->add_option("command", a->command, "The command and its arguments (after --)")->type_name("COMMAND...");
    auto* ttl = cmd->add_option("--ttl", a->ttl_ms, "Lease in ms, renewed every ttl/3 while COMMAND runs")
                    ->default_val(10000)
                    ->check(CLI::Range(std::int64_t{150}, max_duration_ms))
                    ->type_name("MS");
    cmd->add_flag("--no-expiry", a->no_expiry, "The hold has no lease (it still ends if this process dies)")
        ->excludes(ttl);
    cmd->add_option("-E,--conflict-exit-code", a->conflict_exit_code,
                    "Exit code when the lock is not obtained (--timeout, --no-wait), to tell it from COMMAND's own")
        ->default_val(1)
        ->check(CLI::Range(0, 255))
        ->type_name("N");
    cmd->add_option("--on-lost", a->on_lost,
                    "Signal sent to COMMAND if the lock is lost while it runs: none, TERM, KILL, INT, HUP, ...")
        ->default_val("none")
        ->transform([](std::string v) {
            for (auto& ch : v) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
            if (v.rfind("SIG", 0) == 0) v = v.substr(3);
            return v == "NONE" ? std::string("none") : v;
        })
        ->check(CLI::IsMember([] {
            std::vector<std::string> n;
            for (auto& [k, _] : signal_names) n.push_back(k);
            return n;
        }()))
        ->type_name("SIGNAL");
    add_client_flags(cmd, a->conn, false);
    cmd->footer(
        "COMMAND sees LMX_LOCK_KEY, LMX_LOCK_ID and LMX_FENCING_TOKEN in its environment. SIGINT, SIGTERM, SIGHUP,\n"
        "SIGQUIT, SIGUSR1 and SIGUSR2 sent to lmx are forwarded to COMMAND; while waiting, SIGINT, SIGTERM,\n"
        "SIGHUP and SIGQUIT withdraw the request and exit 128+N. With --on-lost, COMMAND also gets that\n"
        "signal if lmx itself dies.\n"
        "Example: lmx run deploy --timeout 60000 -- ./deploy.sh production");
    cmd->callback([a, set_action] { set_action([a] { return run_run(*a); }); });
}

}  // namespace lmx::app
