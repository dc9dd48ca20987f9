#pragma once

// Who holds a key whose requests are entries in creation order, as a store shared by several
// brokers keeps them (docs/design/ha.md, "Who holds"): pure functions of the entries, deciding
// what the in-memory lock_table decides for a single key (unit.queue_rule_test compares the two
// over random request sequences).

#include <lmx/core/types.hpp>

#include <cstdint>
#include <optional>
#include <span>

namespace lmx::core {

// A key's max: how many exclusive holders it admits, and shared ones too when a request named it.
struct key_max {
    std::uint32_t max = 1;
    bool named = false;  // some request named it (unnamed, shared holders are not bounded)
    friend bool operator==(const key_max&, const key_max&) = default;
};

struct queue_entry {
    std::int64_t revision = 0;  // when it was created: the queue order
    lock_mode mode = lock_mode::exclusive;
    key_max max{};       // the key's max in effect when it was created (its own, if it named one)
    bool holds = false;  // granted: it holds whatever the rule says now
};

// The last max a request named on the key, and when (written with the entry that named it).
struct named_max {
    std::int64_t revision = 0;
    key_max max{};
};

// The key's max. A key keeps the last max named while it lives (held or waited for): that is
// the newest entry's record, or `last` if it is newer (its entry has gone, and an older one that
// is still there shows the key has lived since). No entries: the default, 1. `entries` are in
// creation order.
key_max max_of(std::span<const queue_entry> entries, const std::optional<named_max>& last);

// What a new request records: its own max when it names one, else the key's.
key_max max_for_new(std::span<const queue_entry> entries, const std::optional<named_max>& last,
                    std::optional<std::uint32_t> named);

// Whether one more holder of `mode` fits beside `holders` holders of `holder_mode`.
bool admits(std::uint32_t holders, lock_mode holder_mode, lock_mode mode, key_max max) noexcept;

// How many of the first entries hold: the entries that hold already (always the first ones),
// then each waiting entry that fits, in order, until one does not (strict FIFO). The entries
// from the old count up to the new one are the grants to make.
std::size_t holder_count(std::span<const queue_entry> entries, key_max max) noexcept;

}  // namespace lmx::core
