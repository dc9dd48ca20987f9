#include <lmx/broker/broker.hpp>
#include <lmx/core/utf8.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace lmx {

namespace {
std::atomic<log_level> current_level{log_level::info};
std::atomic<log_format> current_format{log_format::text};

const char* name(log_level l) {
    switch (l) {
        case log_level::error: return "error";
        case log_level::warn: return "warn ";
        case log_level::info: return "info ";
        case log_level::debug: return "debug";
    }
    return "?";
}
}  // namespace

void set_log_level(log_level level) { current_level.store(level, std::memory_order_relaxed); }

void set_log_format(log_format format) { current_format.store(format, std::memory_order_relaxed); }

bool log_enabled(log_level level) { return level <= current_level.load(std::memory_order_relaxed); }

void log_line(log_level level, const std::string& message) {
    if (!log_enabled(level)) return;
    using namespace std::chrono;
    auto now = system_clock::now();
    std::time_t t = system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    char stamp[40];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    // One fprintf per line so concurrent writers never interleave within a line.
    if (current_format.load(std::memory_order_relaxed) == log_format::json) {
        std::string level_name = name(level);
        while (level_name.back() == ' ') level_name.pop_back();
        // A JSON string holds well-formed UTF-8 only: each byte that does not start a well-formed
        // sequence (in a peer's bytes quoted in an error, say) becomes U+FFFD.
        std::string clean;
        clean.reserve(message.size());
        for (std::size_t i = 0; i < message.size();) {
            const std::size_t n = core::utf8_sequence(message, i);
            if (n == 0) {
                clean += "\xEF\xBF\xBD";
                ++i;
            } else {
                clean.append(message, i, n);
                i += n;
            }
        }
        const std::string text = boost::json::serialize(boost::json::string(clean));
        std::fprintf(stderr, "{\"time\":\"%s.%03dZ\",\"level\":\"%s\",\"message\":%s}\n", stamp, static_cast<int>(ms),
                     level_name.c_str(), text.c_str());
        return;
    }
    std::fprintf(stderr, "%s.%03dZ %s %s\n", stamp, static_cast<int>(ms), name(level), message.c_str());
}

}  // namespace lmx
