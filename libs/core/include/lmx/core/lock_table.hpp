#pragma once

// The broker's whole lock state in memory, as a pure state machine: no I/O, no clock reads, no
// threads. It is the lock_store of a single broker (see lock_store.hpp for the contract).

#include <lmx/core/lock_store.hpp>

#include <memory>
#include <string>
#include <vector>

namespace lmx::core {

class lock_table final : public lock_store {
public:
    explicit lock_table(effect_sink& sink, table_config config = {});
    ~lock_table() override;
    lock_table(const lock_table&) = delete;
    lock_table& operator=(const lock_table&) = delete;

    effect_kind acquire(const acquire_request& r, time_point now) override;
    effect_kind acquire_many(const acquire_many_request& r, time_point now) override;
    release_result release(std::string_view key, std::string_view id, time_point now,
                           std::optional<session_id> by = std::nullopt) override;
    release_result force_release(std::string_view key, std::optional<std::string_view> id, time_point now) override;
    release_many_result release_many(std::string_view id, time_point now,
                                     std::optional<session_id> by = std::nullopt) override;
    release_result release_own(session_id session, std::string_view key, time_point now) override;
    bool cancel(session_id session, std::string_view id, time_point now) override;
    void abandon(session_id session, std::string_view id, time_point now) override;
    extend_result extend(std::string_view key, std::string_view id, std::optional<std::chrono::milliseconds> ttl,
                         time_point now) override;
    void close_session(session_id session, time_point now) override;
    std::uint32_t session_requests(session_id session) const noexcept override;
    void expire(time_point now) override;
    std::optional<time_point> next_deadline() override;
    bool grants_stalled() const noexcept override;
    bool resume_grants(time_point now) override;
    void set_events(bool enabled) noexcept override;
    void set_pin(std::string_view prefix, std::optional<std::uint32_t> max) override;
    // Slot order, stable while a key lives; O(limit + freed slots skipped).
    key_page list_keys(std::uint64_t cursor, std::size_t limit) const override;
    key_info info(std::string_view key, std::size_t max_holders = static_cast<std::size_t>(-1)) const override;
    table_counters counters() const noexcept override;
    std::vector<contended_key> top_contended(std::size_t n) const override;
    fencing_token last_token() const noexcept override;

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
