#include <lmx/core/memory_store.hpp>

namespace lmx::core {

memory_store::memory_store(effect_sink& sink, table_config config) : sink_(sink), table_(sink, std::move(config)) {}

void memory_store::acquire(const acquire_request& r, time_point now) { table_.acquire(r, now); }

void memory_store::acquire_many(const acquire_many_request& r, time_point now) { table_.acquire_many(r, now); }

void memory_store::answer_unlock(const reply_to& to, std::string_view key, std::string_view id,
                                 const release_result& r) {
    sink_.on_effect({.kind = effect_kind::unlocked,
                     .session = to.session,
                     .id = id,
                     .key = key,
                     .waiters = r.waiters,
                     .uuid = to.uuid,
                     .style = to.style,
                     .status = r.status,
                     .released = r.released});
}

void memory_store::release(const reply_to& to, std::string_view key, std::string_view id, time_point now) {
    answer_unlock(to, key, id, table_.release(key, id, now, to.session));
}

void memory_store::force_release(const reply_to& to, std::string_view key, std::optional<std::string_view> id,
                                 time_point now) {
    answer_unlock(to, key, id.value_or(std::string_view{}), table_.force_release(key, id, now));
}

void memory_store::release_own(const reply_to& to, std::string_view key, time_point now) {
    answer_unlock(to, key, {}, table_.release_own(to.session, key, now));
}

void memory_store::release_many(const reply_to& to, std::string_view id, time_point now) {
    const auto r = table_.release_many(id, now, to.session);
    sink_.on_effect({.kind = effect_kind::released_many,
                     .session = to.session,
                     .id = id,
                     .multi = true,
                     .code = r.code,
                     .uuid = to.uuid,
                     .style = to.style,
                     .names = r.keys});
}

void memory_store::cancel(const reply_to& to, std::string_view id, time_point now) {
    const bool done = table_.cancel(to.session, id, now);
    sink_.on_effect({.kind = effect_kind::cancelled,
                     .session = to.session,
                     .id = id,
                     .uuid = to.uuid,
                     .style = to.style,
                     .done = done});
}

void memory_store::extend(const reply_to& to, std::string_view key, std::string_view id,
                          std::optional<std::chrono::milliseconds> ttl, time_point now) {
    const auto r = table_.extend(key, id, ttl, now);
    std::optional<std::chrono::milliseconds> lease;
    if (r.expires) lease = std::chrono::ceil<std::chrono::milliseconds>(*r.expires - now);
    sink_.on_effect({.kind = effect_kind::extended,
                     .session = to.session,
                     .id = id,
                     .key = key,
                     .code = r.code,
                     .uuid = to.uuid,
                     .style = to.style,
                     .lease = lease});
}

void memory_store::abandon(session_id session, std::string_view id, time_point now) {
    table_.abandon(session, id, now);
}
void memory_store::close_session(session_id session, time_point now) { table_.close_session(session, now); }
std::uint32_t memory_store::session_requests(session_id session) const noexcept {
    return table_.session_requests(session);
}
void memory_store::expire(time_point now) { table_.expire(now); }
std::optional<time_point> memory_store::next_deadline() { return table_.next_deadline(); }
bool memory_store::grants_stalled() const noexcept { return table_.grants_stalled(); }
bool memory_store::resume_grants(time_point now) { return table_.resume_grants(now); }
void memory_store::set_events(bool enabled) noexcept { table_.set_events(enabled); }
void memory_store::set_pin(std::string_view prefix, std::optional<std::uint32_t> max) { table_.set_pin(prefix, max); }
key_page memory_store::list_keys(std::uint64_t cursor, std::size_t limit) const {
    return table_.list_keys(cursor, limit);
}
key_info memory_store::info(std::string_view key, std::size_t max_holders) const {
    return table_.info(key, max_holders);
}
table_counters memory_store::counters() const noexcept { return table_.counters(); }
std::vector<contended_key> memory_store::top_contended(std::size_t n) const { return table_.top_contended(n); }
fencing_token memory_store::last_token() const noexcept { return table_.last_token(); }

}  // namespace lmx::core
