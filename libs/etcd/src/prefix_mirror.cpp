#include <lmx/etcd/prefix_mirror.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <optional>

namespace lmx::etcd {

namespace asio = boost::asio;

struct prefix_mirror::state {
    client& c;
    std::string prefix;
    on_changes changes;
    std::map<std::string, key_value> keys{};
    std::int64_t revision = 0;
    bool synced = false;
    std::uint64_t reads = 0;
    bool stopped = false;
    watch_stream* stream = nullptr;  // the watch under way, closed by stop()
    std::optional<asio::steady_timer> pause{};

    void report(const std::vector<watch_event>& list) {
        if (!list.empty() && !stopped && changes) changes(list, revision);
    }

    // Replaces the content with a fresh read and reports the difference.
    void reload(range_result&& r) {
        std::map<std::string, key_value> fresh;
        for (auto& kv : r.kvs) fresh.emplace(kv.key, std::move(kv));
        std::vector<watch_event> diff;
        // A key gone, or deleted and created again meanwhile (its create revision moved), is
        // reported deleted first.
        for (const auto& [key, old] : keys)
            if (auto it = fresh.find(key); it == fresh.end() || it->second.create_revision != old.create_revision)
                diff.push_back({watch_event::type::del, {.key = key, .mod_revision = r.revision}});
        const auto deletes = diff.size();
        for (const auto& [key, kv] : fresh)
            if (auto it = keys.find(key); it == keys.end() || it->second.mod_revision != kv.mod_revision)
                diff.push_back({watch_event::type::put, kv});
        // Puts in the order their keys were created, as a watch would have told them: a key
        // written after another (a record that names an earlier one) comes after it, whatever
        // their names' order.
        std::stable_sort(
            diff.begin() + static_cast<std::ptrdiff_t>(deletes), diff.end(),
            [](const watch_event& a, const watch_event& b) { return a.kv.create_revision < b.kv.create_revision; });
        keys = std::move(fresh);
        revision = r.revision;
        ++reads;
        report(diff);
    }

    void apply(watch_batch& b) {
        for (const auto& e : b.events) {
            if (e.what == watch_event::type::del)
                keys.erase(e.kv.key);
            else
                keys[e.kv.key] = e.kv;
            revision = std::max(revision, e.kv.mod_revision);
        }
        revision = std::max(revision, b.revision);
        report(b.events);
    }
};

prefix_mirror::prefix_mirror(client& c, std::string prefix, on_changes changes)
    : state_(std::make_shared<state>(state{c, std::move(prefix), std::move(changes)})) {}

prefix_mirror::~prefix_mirror() { stop(); }

void prefix_mirror::stop() {
    state_->stopped = true;
    if (state_->stream) state_->stream->close();
    if (state_->pause) state_->pause->cancel();
}

const std::map<std::string, key_value>& prefix_mirror::keys() const noexcept { return state_->keys; }
std::int64_t prefix_mirror::revision() const noexcept { return state_->revision; }
bool prefix_mirror::synced() const noexcept { return state_->synced; }
std::uint64_t prefix_mirror::reads() const noexcept { return state_->reads; }

asio::awaitable<void> prefix_mirror::run() {
    auto s = state_;
    s->pause.emplace(co_await asio::this_coro::executor);
    const auto end = prefix_end(s->prefix);
    bool failed = false;
    while (!s->stopped) {
        try {
            range_options whole;
            whole.range_end = end;
            auto r = co_await s->c.range(s->prefix, whole);
            if (s->stopped) break;
            s->reload(std::move(r));
            auto w = co_await s->c.watch(s->prefix, end, s->revision + 1);
            if (s->stopped) break;
            s->stream = &w;
            s->synced = true;
            for (;;) {
                auto b = co_await w.next();
                if (b.canceled) break;  // fell behind a compaction: read again
                s->apply(b);
            }
            s->stream = nullptr;
            s->synced = false;
        } catch (const error&) {
            s->stream = nullptr;
            s->synced = false;
            failed = true;
        }
        if (failed && !s->stopped) {
            // etcd away: try again soon
            failed = false;
            s->pause->expires_after(std::chrono::milliseconds(200));
            co_await s->pause->async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
    s->stream = nullptr;
    s->synced = false;
}

}  // namespace lmx::etcd
