#pragma once

// One etcd lease kept alive for as long as it is wanted, and never trusted past what etcd has
// confirmed: what a broker hangs its sessions' entries on.
//
// The keeper grants a lease, renews it every third of its ttl, and knows a time until which the
// lease surely exists: the send time of the last renewal etcd answered plus the ttl it answered
// (etcd counts from when it received that renewal, which is later). When that time comes within
// `margin` without a renewal answered (etcd unreachable, too slow), or etcd says the lease is
// gone, it reports the lease lost, so that its owner can tell holders before etcd may have
// deleted their entries; once etcd answers again it revokes that lease (its entries were already
// given up) and grants a new one.

#include <lmx/etcd/client.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace lmx::etcd {

class lease_keeper {
public:
    enum class event_kind : std::uint8_t {
        granted,  // a new lease, `lease`, is held
        lost,     // lease `lease` may be gone: everything on it counts as gone
    };
    struct event {
        event_kind kind = event_kind::granted;
        std::int64_t lease = 0;
        std::string why{};  // lost: why
    };

    // `c` must outlive the keeper's run(). `margin`: how long before the lease could expire it is
    // reported lost (default: a third of `ttl`).
    lease_keeper(client& c, std::chrono::seconds ttl, std::function<void(const event&)> on_event,
                 std::chrono::milliseconds margin = std::chrono::milliseconds(0));
    lease_keeper(const lease_keeper&) = delete;
    lease_keeper& operator=(const lease_keeper&) = delete;
    ~lease_keeper();  // stops

    // Runs until stop(); call it once (co_spawn it). Revokes the lease it holds when it stops.
    boost::asio::awaitable<void> run();
    void stop();

    std::int64_t lease() const noexcept;  // 0 while none is held
    // Until when the lease held surely exists (the epoch when none is held).
    std::chrono::steady_clock::time_point holds_until() const noexcept;

    struct state;

private:
    std::shared_ptr<state> state_;
};

}  // namespace lmx::etcd
