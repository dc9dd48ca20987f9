#include <lmx/client/ensure_broker.hpp>
#include <lmx/transport/endpoint.hpp>

#include <boost/asio/io_context.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lmx {

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

// One connect + hello against `url`, on a private io_context.
error_code probe(const client_options& base, milliseconds timeout) {
    boost::asio::io_context io(1);
    client_options o = base;
    o.connect_timeout = std::min(o.connect_timeout, timeout);
    client c(io.get_executor(), o);
    error_code result = make_error_code(errc::unreachable);
    c.connect([&](error_code ec) {
        result = ec;
        c.close();
    });
    io.run();
    return result;
}

bool is_local(const transport::endpoint& ep) {
    if (ep.scheme == transport::endpoint::kind::unix_socket) return true;
    const std::string& h = ep.host;
    return h == "localhost" || h == "::1" || h.rfind("127.", 0) == 0 || h == "0.0.0.0" || h == "::";
}

std::string default_state_dir() {
    if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) return std::string(x) + "/lmx";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.local/state/lmx";
}

std::string find_broker(const ensure_broker_options& how) {
    if (!how.broker_path.empty()) return how.broker_path;
    if (const char* p = std::getenv("LMX_BROKER_PATH"); p && *p) return p;
    const char* path = std::getenv("PATH");
    std::string_view dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    while (!dirs.empty()) {
        auto colon = dirs.find(':');
        std::string dir(dirs.substr(0, colon));
        dirs = colon == std::string_view::npos ? std::string_view{} : dirs.substr(colon + 1);
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/lmx";
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return {};
}

// A folder name for a URL: tcp://127.0.0.1:6970 -> tcp-127.0.0.1-6970.
std::string folder_for(std::string_view url) {
    std::string out;
    for (char ch : url) {
        bool keep =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_';
        if (keep)
            out += ch;
        else if (!out.empty() && out.back() != '-')
            out += '-';
    }
    while (!out.empty() && out.back() == '-') out.pop_back();
    return out.empty() ? std::string("broker") : out;
}

std::string last_line_of(const std::string& path) {
    std::ifstream in(path);
    std::string line, last;
    while (std::getline(in, line))
        if (!line.empty()) last = line;
    return last;
}

// Starts `argv` in a new session with stdin from /dev/null and stdout/stderr appended to
// `log`, as a grandchild so that it never becomes our zombie. Returns the broker's pid, or -1.
pid_t spawn_detached(const std::vector<std::string>& args, const std::string& log) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) return -1;
    pid_t child = ::fork();
    if (child < 0) {
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        return -1;
    }
    if (child == 0) {
        // Only async-signal-safe calls from here on.
        ::setsid();
        pid_t grandchild = ::fork();
        if (grandchild == 0) {
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            int in = ::open("/dev/null", O_RDONLY);
            int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (in < 0 || out < 0) ::_exit(127);
            ::dup2(in, 0);
            ::dup2(out, 1);
            ::dup2(out, 2);
            ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);  // nothing of the caller's stays open in the broker
            ::chdir("/");
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        (void)!::write(pipefd[1], &grandchild, sizeof grandchild);
        ::_exit(0);
    }
    ::close(pipefd[1]);
    pid_t pid = -1;
    if (::read(pipefd[0], &pid, sizeof pid) != sizeof pid) pid = -1;
    ::close(pipefd[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    return pid;
}

// True while `pid` exists and is not a zombie waiting for a reaper.
bool alive(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) return ::kill(pid, 0) == 0;
    auto close = stat.rfind(')');
    return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

ensure_broker_result fail(errc e, std::string message, std::string log = {}) {
    return {.error = make_error_code(e), .message = std::move(message), .started = false, .log_path = std::move(log)};
}

}  // namespace

ensure_broker_result ensure_broker(const client_options& options, const ensure_broker_options& how) {
    std::string why;
    auto ep = transport::parse_endpoint(options.url, &why);
    if (!ep) return fail(errc::invalid_url, "invalid broker URL '" + options.url + "': " + why);

    auto first = probe(options, milliseconds{2000});
    // A broker that wants another token is a broker all the same: the caller's connect says why.
    if (!first || first == errc::unauthenticated) return {};
    if (first == errc::broker_incompatible || first == errc::wrong_endpoint)
        return fail(first == errc::wrong_endpoint ? errc::wrong_endpoint : errc::broker_incompatible,
                    "something answers at " + options.url + " but it is not an lmx broker");
    // Nobody listens there (or nothing more precise is known): a broker may be started.
    if (first != errc::unreachable && first != errc::refused)
        return fail(errc::unreachable, "cannot reach " + options.url + ": " + first.message());
    if (!is_local(*ep))
        return fail(errc::unreachable,
                    "no broker at " + options.url + ", and it is not a local address where one could be started");

    std::error_code aec;
    std::string broker = find_broker(how);
    // The broker runs from "/", so relative paths are made absolute here.
    if (!broker.empty()) broker = fs::absolute(broker, aec).string();
    if (broker.empty())
        return fail(errc::unreachable,
                    "no broker at " + options.url +
                        " and no lmx executable to start one (put lmx on PATH or set LMX_BROKER_PATH)");

    std::string dir = fs::absolute(how.state_dir.empty() ? default_state_dir() : how.state_dir, aec).string() + "/" +
                      folder_for(options.url);
    std::error_code fec;
    fs::create_directories(dir, fec);
    // The broker keeps its fencing state here and refuses a folder others may write to (a umask
    // of 002 would make one): it is this user's alone.
    if (!fec) fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, fec);
    if (fec) return fail(errc::unreachable, "cannot create " + dir + ": " + fec.message());
    std::string log = dir + "/broker.log";

    // Racing callers take turns here; whoever comes second finds the first one's broker.
    std::string lock_path = dir + "/ensure.lock";
    int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) return fail(errc::unreachable, "cannot open " + lock_path + ": " + std::strerror(errno));
    auto lock_deadline = steady::now() + how.start_timeout + milliseconds{5000};
    while (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (steady::now() >= lock_deadline) {
            ::close(lock_fd);
            return fail(errc::unreachable, "another process has been starting a broker for " + options.url +
                                               " for too long (" + lock_path + ")");
        }
        std::this_thread::sleep_for(milliseconds{20});
    }
    struct unlock_on_exit {
        int fd;
        ~unlock_on_exit() { ::close(fd); }
    } unlocker{lock_fd};

    if (!probe(options, milliseconds{2000})) return {};

    std::vector<std::string> args{broker, "broker"};
    // The default URL gets the default listeners (with the WebSocket port and its dashboard).
    if (options.url != client_options{}.url) args.insert(args.end(), {"--listen", options.url});
    args.insert(args.end(), {"--state-dir", dir});
    args.insert(args.end(), how.broker_args.begin(), how.broker_args.end());
    { std::ofstream(log, std::ios::app) << "--- started by ensure_broker for " << options.url << "\n"; }
    pid_t pid = spawn_detached(args, log);
    if (pid <= 0) return fail(errc::unreachable, "cannot start " + broker + ": " + std::strerror(errno), log);

    auto deadline = steady::now() + how.start_timeout;
    for (;;) {
        if (!probe(options, milliseconds{500})) return {.error = {}, .message = {}, .started = true, .log_path = log};
        bool gone = !alive(pid);
        // A broker that was merely slow to answer our probe makes the new one exit (address in
        // use): it is the broker we were looking for.
        if (gone && !probe(options, milliseconds{5000})) return {};
        if (gone || steady::now() >= deadline) {
            std::string last = last_line_of(log);
            return fail(errc::unreachable,
                        "the broker started for " + options.url + (gone ? " exited" : " did not answer in time") +
                            (last.empty() ? "" : ": " + last) + " (log: " + log + ")",
                        log);
        }
        std::this_thread::sleep_for(milliseconds{50});
    }
}

}  // namespace lmx
