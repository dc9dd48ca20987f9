#pragma once

// Starts a real `lmx broker` process on ephemeral ports and a temp Unix socket for a test, and
// stops it (SIGTERM, then SIGKILL) when the test is done.

#include "process.hpp"

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::test {

struct broker_config {
    bool tcp = true;
    bool unix_socket = true;
    bool websocket = true;
    std::vector<std::string> extra_args{};  // e.g. {"--ttl", "200"}
    std::string state_dir{};                // passed as --state-dir when set
    std::string unix_path{};                // default: <dir>/lmx.sock
    std::vector<std::string> env{};         // extra "NAME=value" entries for the broker's environment
    unsigned nofile = 0;                    // > 0: the broker's file-descriptor limit (soft and hard)
};

// The broker is killed when the thread that started it ends (PR_SET_PDEATHSIG), so that no broker
// outlives a crashed test: start it on the test's main thread.
class broker_process {
public:
    explicit broker_process(broker_config config = {});
    ~broker_process();
    broker_process(const broker_process&) = delete;
    broker_process& operator=(const broker_process&) = delete;

    std::string tcp_url, unix_url, ws_url;  // bound URLs ("" when not configured)
    std::string tls_url, wss_url;           // when extra_args listen on tls:// or wss://
    std::vector<std::string> urls() const;  // tcp, unix and ws: every configured one
    // The bound URL of one transport: "tcp", "unix", "ws", "tls" or "wss"; throws when not configured.
    const std::string& url(std::string_view kind) const;

    int pid() const noexcept { return pid_; }
    bool running();
    // Sends `sig` and waits; returns the exit status (128+N when killed by signal N), -1 on timeout.
    int stop(int sig = 15, std::chrono::milliseconds wait = std::chrono::seconds(10));
    std::string log() const;  // the broker's stderr so far
    // Waits up to `wait` for `text` to appear in log().
    bool wait_for_log(std::string_view text, std::chrono::milliseconds wait = std::chrono::seconds(5)) const;
    // Resident memory of the broker process in KiB (VmRSS of /proc/<pid>/status), -1 if unknown.
    long rss_kib() const;
    const std::string& dir() const noexcept { return dir_.path(); }

private:
    temp_dir dir_;
    broker_config config_;
    int pid_ = -1;
    int status_ = -1;
};

// Runs `lmx` with `args` and returns {exit status, stdout+stderr}, killing it after `timeout`.
struct run_result {
    int status;
    std::string output;
};
run_result run_lmx(const std::vector<std::string>& args, std::chrono::milliseconds timeout = std::chrono::seconds(20));

// The lmx executable: $LMX_BINARY when set, else the one the build names (LMX_BINARY).
const char* lmx_binary();

}  // namespace lmx::test
