#pragma once

// The broker's whole lock state in memory, as a pure state machine: no I/O, no clock reads, no
// threads. Its calls answer at once with their results; memory_store turns them into the
// lock_store contract (answers through the sink) for the broker.

#include <lmx/core/lock_store.hpp>

#include <memory>
#include <string>
#include <vector>

namespace lmx::core {

class lock_table final {
public:
    explicit lock_table(effect_sink& sink, table_config config = {});
    ~lock_table();
    lock_table(const lock_table&) = delete;
    lock_table& operator=(const lock_table&) = delete;

    // The outcome goes to the sink (granted / queued / refused / rejected) and is also returned.
    effect_kind acquire(const acquire_request& r, time_point now);
    effect_kind acquire_many(const acquire_many_request& r, time_point now);
    // `by`: the session asking (see lock_store::release).
    release_result release(std::string_view key, std::string_view id, time_point now,
                           std::optional<session_id> by = std::nullopt);
    release_result force_release(std::string_view key, std::optional<std::string_view> id, time_point now);
    release_many_result release_many(std::string_view id, time_point now, std::optional<session_id> by = std::nullopt);
    release_result release_own(session_id session, std::string_view key, time_point now);
    // False when `id` of `session` is not waiting (granted or unknown).
    bool cancel(session_id session, std::string_view id, time_point now);
    void abandon(session_id session, std::string_view id, time_point now);
    extend_result extend(std::string_view key, std::string_view id, std::optional<std::chrono::milliseconds> ttl,
                         time_point now);
    void close_session(session_id session, time_point now);
    std::uint32_t session_requests(session_id session) const noexcept;
    void expire(time_point now);
    std::optional<time_point> next_deadline();
    bool grants_stalled() const noexcept;
    bool resume_grants(time_point now);
    void set_events(bool enabled) noexcept;
    void set_pin(std::string_view prefix, std::optional<std::uint32_t> max);
    // Slot order, stable while a key lives; O(limit + freed slots skipped).
    key_page list_keys(std::uint64_t cursor, std::size_t limit) const;
    key_info info(std::string_view key, std::size_t max_holders = static_cast<std::size_t>(-1)) const;
    table_counters counters() const noexcept;
    std::vector<contended_key> top_contended(std::size_t n) const;
    fencing_token last_token() const noexcept;

    // Every key, for tests.
    std::vector<std::string> list_keys() const;
    const table_config& config() const noexcept;

    // Internal consistency check for tests: throws std::logic_error on a broken invariant.
    void check_invariants() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace lmx::core
