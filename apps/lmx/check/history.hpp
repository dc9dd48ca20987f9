#pragma once

// The checker's history and its analysis. A history is JSON lines in time order, one record per
// line (docs/check.md has the full format):
//
//   {"t":NS,"src":"w0.1","s":2,"ev":"send","m":{...request...}}   a client sent a frame
//   {"t":NS,"src":"w0.1","s":2,"ev":"recv","m":{...reply...}}     a client received one
//   {"t":NS,"src":"w0.1","s":2,"ev":"open"} / "close" with "how"   a connection's life
//   {"t":NS,"src":"watch","s":1,"ev":"recv","m":{...event...}}     the broker's watch stream
//   {"t":NS,"src":"check","ev":"broker-kill"|"broker-start"|"worker-kill",...}
//
// `t` is CLOCK_MONOTONIC in nanoseconds, shared by every process on the machine (the broker's
// lease clock too). The analysis replays it and reports every violation of what lmx promises.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::check {

struct violation {
    std::string kind;    // e.g. "over-max", "double-answer"
    std::string detail;  // one line a person can follow up
    std::int64_t t = 0;
};

struct summary {
    std::uint64_t records = 0;
    std::uint64_t requests = 0;    // frames sent by clients
    std::uint64_t operations = 0;  // requests other than hello, ping and lock-info
    std::uint64_t grants = 0;      // grants received by clients
    std::uint64_t lost = 0;        // lock-lost notices received
    std::uint64_t stream_events = 0;
    std::uint64_t epochs = 0;  // broker runs seen
    std::uint64_t sessions = 0;
    std::uint64_t sessions_cut = 0;  // closed abruptly, lost or killed
    std::uint64_t broker_kills = 0;
    std::uint64_t worker_kills = 0;
    std::map<std::string, std::uint64_t> requests_by_type;
    std::map<std::string, std::uint64_t> rejections_by_code;
    std::map<std::string, std::uint64_t> violations_by_kind;
    std::vector<violation> violations;  // the first ones, in time order
    std::uint64_t violation_count = 0;
};

struct analyze_options {
    // The broker under test streams watch events and hands out fencing tokens (lmx). Without
    // them (another broker) only the checks that need neither run: holders per key from the
    // clients' view and one answer per request.
    bool broker_stream = true;
    std::size_t keep = 50;  // violations kept with their details
};

class analyzer {
public:
    explicit analyzer(analyze_options options = {});
    ~analyzer();
    analyzer(const analyzer&) = delete;
    analyzer& operator=(const analyzer&) = delete;

    // One history line; records must come in time order. A line that is not a record (a line
    // cut short by a kill) is counted and skipped.
    void add(std::string_view line);
    summary finish();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// Calls `each` with every record of the files in time order (each file must be in time order
// already, as every process writes its own; throws when one is not).
void merge_histories(const std::vector<std::string>& paths, const std::function<void(const std::string&)>& each);

// Analyzes history files (each in time order; merged here by time).
summary analyze_files(const std::vector<std::string>& paths, analyze_options options = {});

std::string format_summary(const summary& s);
std::string summary_json(const summary& s);

}  // namespace lmx::check
