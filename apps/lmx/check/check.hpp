#pragma once

// `lmx check`: the coordinator (check_command.cpp) starts a broker, a watcher and client
// processes (worker.cpp), injects faults, and analyzes the history (history.cpp).

#include <atomic>
#include <cstdint>
#include <string>

namespace lmx::check {

// Shared by the coordinator and every client process through a mapped file: progress counters,
// the stop flag, and ids of live requests that other clients may end (foreign unlocks).
inline constexpr int max_workers = 64;
inline constexpr int ids_per_worker = 32;
inline constexpr int id_size = 48;

struct board_slot {
    std::atomic<std::uint64_t> ops;
    char ids[ids_per_worker][id_size];  // NUL-terminated; read racily, so checked before use
};

struct board {
    std::atomic<std::uint32_t> stop;  // 1: finish, release everything, close cleanly
    board_slot slots[max_workers];
};

struct worker_config {
    std::string url;    // unix:///path or tcp://host:port
    std::string board;  // the board file
    int slot = 0;
    std::string id;       // unique per process, e.g. "w3.2"
    std::string history;  // JSON lines written here
    std::string prefix;   // key prefix of this run
    std::uint64_t seed = 1;
    int keys = 6;
    int sessions = 2;  // connections per client process
    int depth = 6;     // lock requests in flight per connection
};

int run_worker(const worker_config& cfg);

// Appends history records, one write(2) each: a record is whole in the file even when the process
// is killed right after, and a kill mid-record leaves one cut line that the analysis skips.
class history_file {
public:
    explicit history_file(const std::string& path);
    ~history_file();
    history_file(const history_file&) = delete;
    history_file& operator=(const history_file&) = delete;
    // {"t":..,"src":..,"s":..,"ev":..[,"m":m][,"how":how][,extra]}; `m` and `extra` are JSON text.
    void record(const std::string& src, std::int64_t session, const char* ev, std::string_view m = {},
                std::string_view how = {}, std::string_view extra = {});

private:
    int fd_ = -1;
};

int connect_to(const std::string& url);  // blocking connect to unix:// or tcp://; -1 on failure

// CLOCK_MONOTONIC in nanoseconds: every process on the machine reads the same clock.
std::int64_t mono_ns();

}  // namespace lmx::check
