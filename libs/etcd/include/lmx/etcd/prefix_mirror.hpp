#pragma once

// A copy of every key under a prefix, kept current by a watch: what a broker decides grants from.
//
// It reads the prefix, then watches it from the next revision. When the watch breaks (a member
// dies, etcd goes away) or is canceled (it fell behind a compaction), it reads the prefix again
// once etcd answers and reports the difference from what it held as changes, so a consumer that
// applies every change it is told about ends up with etcd's content: nothing is lost, whatever
// happened while the mirror was away. A read reports the keys gone first (with those deleted and
// created again meanwhile), then the keys new or changed in the order of their creation (ties in
// key order), so a key is reported after the keys that were written before it, as a watch from
// the start would have told them.

#include <lmx/etcd/client.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lmx::etcd {

class prefix_mirror {
public:
    // For a delete, kv holds the key and the mod_revision of the deletion (or of the read that
    // found the key gone).
    using on_changes = std::function<void(const std::vector<watch_event>& changes, std::int64_t revision)>;

    // `c` must outlive run(). `changes` is called after the content changed, with the revision the
    // mirror now reflects.
    prefix_mirror(client& c, std::string prefix, on_changes changes);
    prefix_mirror(const prefix_mirror&) = delete;
    prefix_mirror& operator=(const prefix_mirror&) = delete;
    ~prefix_mirror();  // stops

    // Runs until stop(); call it once (co_spawn it).
    boost::asio::awaitable<void> run();
    void stop();

    const std::map<std::string, key_value>& keys() const noexcept;
    std::int64_t revision() const noexcept;  // 0 until the first read
    bool synced() const noexcept;            // a watch is in place from revision()
    std::uint64_t reads() const noexcept;    // full reads of the prefix so far (1 + resyncs)

    struct state;

private:
    std::shared_ptr<state> state_;
};

}  // namespace lmx::etcd
