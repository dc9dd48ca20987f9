#include <lmx/etcd/lease_keeper.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <optional>
#include <vector>

namespace lmx::etcd {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {
constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
}  // namespace

struct lease_keeper::state {
    client& c;
    std::chrono::seconds ttl;
    milliseconds margin;
    std::function<void(const event&)> on_event;
    std::int64_t lease = 0;
    steady::time_point until{};
    std::vector<std::int64_t> given_up{};  // lost leases, revoked once etcd answers
    bool stopped = false;
    std::optional<asio::steady_timer> pause{};
    std::optional<asio::steady_timer> watchdog{};

    milliseconds renew_every() const { return std::chrono::duration_cast<milliseconds>(ttl) / 3; }
    milliseconds retry_after() const { return std::clamp(renew_every() / 4, milliseconds(50), milliseconds(500)); }

    void emit(event e) {
        if (!stopped && on_event) on_event(e);
    }

    void give_up(std::string why) {
        if (!lease) return;
        const event e{event_kind::lost, lease, std::move(why)};
        given_up.push_back(lease);
        lease = 0;
        until = {};
        emit(e);
    }

    void rearm_watchdog() {
        if (watchdog) watchdog->cancel();
    }

    asio::awaitable<void> sleep(milliseconds d) {
        pause->expires_after(d);
        co_await pause->async_wait(tuple);
    }
};

namespace {
// Reports the lease lost once its sure lifetime comes within the margin, whatever the renewals
// are doing (a renewal may wait on an unreachable member for its whole request timeout).
asio::awaitable<void> watch_deadline(std::shared_ptr<lease_keeper::state> s) {
    while (!s->stopped) {
        s->watchdog->expires_at(s->lease ? s->until - s->margin : steady::time_point::max());
        co_await s->watchdog->async_wait(tuple);
        if (s->stopped) co_return;
        if (s->lease && steady::now() >= s->until - s->margin) s->give_up("no renewal answered in time");
    }
}
}  // namespace

lease_keeper::lease_keeper(client& c, std::chrono::seconds ttl, std::function<void(const event&)> on_event,
                           milliseconds margin)
    : state_(std::make_shared<state>(
          state{c, ttl, margin.count() > 0 ? margin : std::chrono::duration_cast<milliseconds>(ttl) / 3,
                std::move(on_event)})) {}

lease_keeper::~lease_keeper() { stop(); }

void lease_keeper::stop() {
    state_->stopped = true;
    if (state_->pause) state_->pause->cancel();
    state_->rearm_watchdog();
}

std::int64_t lease_keeper::lease() const noexcept { return state_->lease; }
steady::time_point lease_keeper::holds_until() const noexcept { return state_->until; }

asio::awaitable<void> lease_keeper::run() {
    auto s = state_;
    const auto ex = co_await asio::this_coro::executor;
    s->pause.emplace(ex);
    s->watchdog.emplace(ex);
    asio::co_spawn(ex, watch_deadline(s), asio::detached);
    // A renewal answered waits a third of the ttl for the next; anything that failed is tried
    // again soon, so that a short outage does not use up the margin before the next attempt.
    milliseconds wait{0};
    while (!s->stopped) {
        if (wait.count() > 0) co_await s->sleep(wait);
        if (s->stopped) break;
        wait = s->retry_after();
        try {
            // A lease given up goes first: its entries must not outlive the report of its loss.
            while (!s->given_up.empty()) {
                co_await s->c.revoke_lease(s->given_up.back());
                s->given_up.pop_back();
            }
            if (!s->lease) {
                const auto sent = steady::now();
                const auto granted = co_await s->c.grant_lease(s->ttl);
                if (s->stopped) {
                    s->given_up.push_back(granted.id);
                    break;
                }
                s->lease = granted.id;
                s->until = sent + granted.ttl;
                s->rearm_watchdog();
                s->emit({event_kind::granted, granted.id, {}});
                wait = s->renew_every();
                continue;
            }
            const auto id = s->lease;
            const auto sent = steady::now();
            const auto left = co_await s->c.keep_alive(id);
            if (s->lease != id) continue;  // given up while the renewal was under way
            if (left.count() <= 0) {
                s->give_up("etcd no longer has the lease");
                continue;
            }
            s->until = sent + left;
            s->rearm_watchdog();
            wait = s->renew_every();
        } catch (const error&) {
            // etcd unreachable or refusing: tried again soon; the watchdog decides when the lease
            // counts as lost
        }
    }
    // Stopped: what is held goes with it, if etcd can be told.
    if (s->lease) s->given_up.push_back(std::exchange(s->lease, 0));
    s->until = {};
    s->rearm_watchdog();
    for (const auto id : s->given_up) {
        try {
            co_await s->c.revoke_lease(id);
        } catch (const error&) {
            // its ttl ends it
        }
    }
    s->given_up.clear();
}

}  // namespace lmx::etcd
