#include "broker_process.hpp"

#include <algorithm>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

namespace lmx::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// $LMX_BINARY, when set, names another lmx than the build's own: the TSan tests drive the broker
// of the ASan test build.
const char* lmx_binary() {
    const char* other = std::getenv("LMX_BINARY");
    return other && *other ? other : LMX_BINARY;
}

namespace {
std::string read_file(const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
}  // namespace

broker_process::broker_process(broker_config config) : config_(std::move(config)) {
    std::vector<std::string> args = {lmx_binary(), "broker", "--urls-file", dir() + "/urls"};
    // info unless the test names its own level
    if (std::find(config_.extra_args.begin(), config_.extra_args.end(), "--log-level") == config_.extra_args.end())
        args.insert(args.end(), {"--log-level", "info"});
    if (config_.tcp) args.insert(args.end(), {"--listen", "tcp://127.0.0.1:0"});
    if (config_.unix_socket) {
        if (config_.unix_path.empty()) config_.unix_path = dir() + "/lmx.sock";
        args.insert(args.end(), {"--listen", "unix://" + config_.unix_path});
    }
    if (config_.websocket) args.insert(args.end(), {"--listen", "ws://127.0.0.1:0/"});
    if (!config_.state_dir.empty()) args.insert(args.end(), {"--state-dir", config_.state_dir});
    args.insert(args.end(), config_.extra_args.begin(), config_.extra_args.end());
    pid_ = spawn(args, dir() + "/broker.log", config_.env, config_.nofile);
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!fs::exists(dir() + "/urls")) {
        if (!running()) throw std::runtime_error("lmx broker exited at start-up: " + log());
        if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("lmx broker did not start: " + log());
        std::this_thread::sleep_for(5ms);
    }
    std::istringstream urls(read_file(dir() + "/urls"));
    for (std::string line; std::getline(urls, line);) {
        if (line.starts_with("tcp://"))
            tcp_url = line;
        else if (line.starts_with("unix://"))
            unix_url = line;
        else if (line.starts_with("ws://"))
            ws_url = line;
        else if (line.starts_with("tls://"))
            tls_url = line;
        else if (line.starts_with("wss://"))
            wss_url = line;
    }
}

broker_process::~broker_process() {
    if (pid_ > 0 && status_ < 0) {
        if (stop(SIGTERM, 10s) < 0) {
            ::kill(pid_, SIGKILL);
            wait_for(pid_, 5s);
        }
    }
}

std::vector<std::string> broker_process::urls() const {
    std::vector<std::string> out;
    for (auto* u : {&tcp_url, &unix_url, &ws_url})
        if (!u->empty()) out.push_back(*u);
    return out;
}

bool broker_process::running() {
    if (status_ >= 0) return false;
    status_ = wait_for(pid_, 0ms);
    return status_ < 0;
}

int broker_process::stop(int sig, std::chrono::milliseconds wait) {
    if (status_ >= 0) return status_;
    ::kill(pid_, sig);
    int s = wait_for(pid_, wait);
    if (s >= 0) status_ = s;
    return s;
}

std::string broker_process::log() const { return read_file(dir() + "/broker.log"); }

const std::string& broker_process::url(std::string_view kind) const {
    const std::string* u = kind == "tcp"    ? &tcp_url
                           : kind == "unix" ? &unix_url
                           : kind == "ws"   ? &ws_url
                           : kind == "tls"  ? &tls_url
                           : kind == "wss"  ? &wss_url
                                            : nullptr;
    if (!u || u->empty()) throw std::runtime_error("broker has no " + std::string(kind) + " listener");
    return *u;
}

bool broker_process::wait_for_log(std::string_view text, std::chrono::milliseconds wait) const {
    auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
        if (log().find(text) != std::string::npos) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(10ms);
    }
}

long broker_process::rss_kib() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
    return -1;
}

run_result run_lmx(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
    temp_dir d;
    std::vector<std::string> full = {lmx_binary()};
    full.insert(full.end(), args.begin(), args.end());
    pid_t pid = spawn(full, d.path() + "/out");
    int s = wait_for(pid, timeout);
    if (s < 0) {
        ::kill(pid, SIGKILL);
        wait_for(pid, 5s);
    }
    return {s, read_file(d.path() + "/out")};
}

}  // namespace lmx::test
