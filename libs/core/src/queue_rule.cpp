#include <lmx/core/queue_rule.hpp>

namespace lmx::core {

key_max max_of(std::span<const queue_entry> entries, const std::optional<named_max>& last) {
    if (entries.empty()) return {};
    const queue_entry& newest = entries.back();
    // The newest entry recorded the key's max when it was created, which took in every max named
    // before it while the key lived. A max named later came with an entry that has gone since,
    // while the newest entry, older than it, stayed: the key has lived through, and it holds.
    if (last && last->revision > newest.revision) return last->max;
    return newest.max;
}

key_max max_for_new(std::span<const queue_entry> entries, const std::optional<named_max>& last,
                    std::optional<std::uint32_t> named) {
    if (named) return {*named, true};
    return max_of(entries, last);
}

bool admits(std::uint32_t holders, lock_mode holder_mode, lock_mode mode, key_max max) noexcept {
    if (holders == 0) return true;
    if (holder_mode != mode) return false;
    if (mode == lock_mode::shared && !max.named) return true;
    return holders < max.max;
}

std::size_t holder_count(std::span<const queue_entry> entries, key_max max) noexcept {
    std::uint32_t holders = 0;
    lock_mode mode = lock_mode::exclusive;
    std::size_t i = 0;
    for (; i < entries.size(); ++i) {
        const queue_entry& e = entries[i];
        if (!e.holds && !admits(holders, mode, e.mode, max)) break;
        mode = e.mode;
        ++holders;
    }
    return i;
}

}  // namespace lmx::core
