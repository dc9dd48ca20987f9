#pragma once

// Small helpers shared by the integration suites: request frames, typed field access on replies,
// and the checks every scenario repeats (is the connection alive, who holds a key).

#include "broker_process.hpp"
#include "wire_client.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::test {

namespace json = boost::json;
using namespace std::chrono_literals;

// The transports every protocol scenario runs over (see broker_process::url).
inline const char* const transports[] = {"tcp", "unix", "ws"};

// A broker process whose end is part of the test: SIGTERM must stop it with status 0, so a
// sanitizer report at exit (LeakSanitizer runs only then) fails the test that ran it.
class checked_broker : public broker_process {
public:
    using broker_process::broker_process;
    ~checked_broker() {
        if (!running()) return;  // the test stopped it and judged the status itself
        int status = stop(SIGTERM);
        BOOST_TEST(status == 0, "broker exit status " << status << "; its log:\n" << log());
    }
};

// A request id unique within the test run.
inline std::string fresh_id(std::string_view prefix = "r") {
    static std::atomic<unsigned> n{0};
    return std::string(prefix) + "-" + std::to_string(++n);
}

inline json::object merged(json::object base, const json::object& extra) {
    for (auto& [k, v] : extra) base[k] = v;
    return base;
}

inline json::object lock_msg(const std::string& id, const std::string& key, const json::object& extra = {}) {
    return merged({{"type", "lock"}, {"uuid", id}, {"key", key}}, extra);
}

inline json::object unlock_msg(const std::string& lock_id, const std::string& key, const json::object& extra = {}) {
    return merged({{"type", "unlock"}, {"uuid", fresh_id("u")}, {"key", key}, {"_uuid", lock_id}}, extra);
}

// True only when the field is the JSON boolean true.
inline bool flag(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && v->is_bool() && v->get_bool();
}

inline bool has(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && !v->is_null();
}

inline std::string text(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

inline std::uint64_t number(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    if (v && v->is_uint64()) return v->get_uint64();
    if (v && v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
    throw std::runtime_error("field " + std::string(name) + " is not a non-negative integer in " + json::serialize(o));
}

inline std::string dump(const json::object& o) { return json::serialize(o); }

// Sends a lock and returns its first reply (the grant, the queued notice, a refusal or an error).
inline json::object acquire(wire_client& c, const std::string& id, const std::string& key,
                            const json::object& extra = {}) {
    return c.request(lock_msg(id, key, extra));
}

inline json::object release(wire_client& c, const std::string& lock_id, const std::string& key,
                            const json::object& extra = {}) {
    return c.request(unlock_msg(lock_id, key, extra));
}

inline json::object lock_info(wire_client& c, const std::string& key) {
    return c.request({{"type", "lock-info-request"}, {"uuid", fresh_id("info")}, {"key", key}});
}

inline std::vector<std::string> holders_of(wire_client& c, const std::string& key) {
    std::vector<std::string> out;
    auto info = lock_info(c, key);
    if (auto* h = info.if_contains("lockholderUUIDs"); h && h->is_array())
        for (auto& v : h->get_array()) out.emplace_back(v.as_string());
    return out;
}

inline json::object stats(wire_client& c) {
    auto r = c.request({{"type", "system-stats-request"}, {"uuid", fresh_id("stats")}});
    return r.at("stats").as_object();
}

// A ping answered on this connection.
inline bool alive(wire_client& c) {
    try {
        auto id = fresh_id("ping");
        c.send(json::object{{"type", "ping"}, {"uuid", id}});
        auto r = c.try_recv_for(id, 3s);
        return r && text(*r, "type") == "pong";
    } catch (const std::exception&) {
        return false;
    }
}

// The next frame of `type` (e.g. "lock-lost", "event"); nullopt if none comes within `timeout`.
inline std::optional<json::object> next_of_type(wire_client& c, std::string_view type,
                                                std::chrono::milliseconds timeout) {
    return c.try_recv_if([&](const json::object& o) { return text(o, "type") == type; }, timeout);
}

// Milliseconds elapsed since `t` (a plain number, so that Boost.Test can print it).
inline long long since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace lmx::test
