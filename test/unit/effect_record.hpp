#pragma once

// An effect copied out of an effect_sink call (its views die when on_effect returns), shared by
// the lock table's unit and model tests.

#include <lmx/core/lock_table.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lmx::test {

struct effect_record {
    core::effect_kind kind{};
    core::session_id session = 0;
    std::string id;
    std::string key;
    std::vector<std::pair<std::string, core::fencing_token>> keys;
    bool multi = false;
    bool notice = true;
    core::fencing_token token = 0;
    std::uint32_t waiters = 0;
    std::uint32_t readers = 0;
    std::uint32_t position = 0;
    std::optional<core::time_point> expires;
    core::errc code = core::errc::ok;
    core::lost_reason reason{};
    core::event_kind event{};
};

inline effect_record copy_effect(const core::effect& e) {
    effect_record r;
    r.kind = e.kind;
    r.session = e.session;
    r.id = std::string(e.id);
    r.key = std::string(e.key);
    for (const auto& kt : e.keys) r.keys.emplace_back(std::string(kt.key), kt.token);
    r.multi = e.multi;
    r.notice = e.notice;
    r.token = e.token;
    r.waiters = e.waiters;
    r.readers = e.readers;
    r.position = e.position;
    r.expires = e.expires;
    r.code = e.code;
    r.reason = e.reason;
    r.event = e.event;
    return r;
}

}  // namespace lmx::test
