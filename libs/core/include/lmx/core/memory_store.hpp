#pragma once

// The store of a single broker: the lock state in a lock_table, in this process's memory. Every
// answer goes to the sink before the call returns, after the grants and notices the call caused,
// which is the order the broker's replies have always had.

#include <lmx/core/lock_store.hpp>
#include <lmx/core/lock_table.hpp>

namespace lmx::core {

class memory_store final : public lock_store {
public:
    explicit memory_store(effect_sink& sink, table_config config = {});

    void acquire(const acquire_request& r, time_point now) override;
    void acquire_many(const acquire_many_request& r, time_point now) override;
    void release(const reply_to& to, std::string_view key, std::string_view id, time_point now) override;
    void force_release(const reply_to& to, std::string_view key, std::optional<std::string_view> id,
                       time_point now) override;
    void release_many(const reply_to& to, std::string_view id, time_point now) override;
    void release_own(const reply_to& to, std::string_view key, time_point now) override;
    void cancel(const reply_to& to, std::string_view id, time_point now) override;
    void extend(const reply_to& to, std::string_view key, std::string_view id,
                std::optional<std::chrono::milliseconds> ttl, time_point now) override;
    void abandon(session_id session, std::string_view id, time_point now) override;
    void close_session(session_id session, time_point now) override;
    std::uint32_t session_requests(session_id session) const noexcept override;
    void expire(time_point now) override;
    std::optional<time_point> next_deadline() override;
    bool grants_stalled() const noexcept override;
    bool resume_grants(time_point now) override;
    void set_events(bool enabled) noexcept override;
    void set_pin(std::string_view prefix, std::optional<std::uint32_t> max) override;
    key_page list_keys(std::uint64_t cursor, std::size_t limit) const override;
    key_info info(std::string_view key, std::size_t max_holders = static_cast<std::size_t>(-1)) const override;
    table_counters counters() const noexcept override;
    std::vector<contended_key> top_contended(std::size_t n) const override;
    fencing_token last_token() const noexcept override;

    // The table itself, for tests that check its invariants or drive it directly.
    lock_table& table() noexcept { return table_; }

private:
    void answer_unlock(const reply_to& to, std::string_view key, std::string_view id, const release_result& r);

    effect_sink& sink_;
    lock_table table_;
};

}  // namespace lmx::core
