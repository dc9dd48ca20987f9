#pragma once

// live-mutex's read/write-lock protocol on top of the lock table, sans I/O: the `rwStatus` of
// lock and unlock requests (read-preferring clients: a read key R and a write key W) and the
// write-preferring messages (one key K). Answers are written as frames for the session that
// asked, through rw_output. docs/protocol.md ("Read/write locks") says what is guaranteed.
//
// Read-preferring: readers inside R are counted here and held in the table as ONE shared hold on
// R (so lmx exclusive requests on R wait for them), owned by `group_session`. The first reader's
// lock of W is taken for the whole group under `group_session` too: it never expires and
// survives the first reader's connection, and it is released when the last reader leaves
// (end_read or disconnect). begin_read/end_read are answered here, never queued in the table.
//
// Write-preferring: a lock request that follows a reader's register-write-flag-check is shared,
// a writer's max-1 lock on such a key is exclusive, so the table keeps readers and writers apart
// whatever order the flag and counter messages come in; the writer flag and reader count are
// kept per key and cleaned up when their connection closes.

#include <lmx/core/lock_store.hpp>
#include <lmx/core/protocol.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace lmx::core {

class rw_output {
public:
    virtual ~rw_output() = default;
    // Where frames for `s` go; nullptr when the session is gone.
    virtual std::string* frames_for(session_id s) = 0;
};

class rw_locks {
public:
    // `group_session` must be a session id no connection uses.
    rw_locks(lock_store& table, rw_output& out, session_id group_session);
    ~rw_locks();
    rw_locks(const rw_locks&) = delete;
    rw_locks& operator=(const rw_locks&) = delete;

    // A lock request. True when it was served here; otherwise the caller serves `r`, which may
    // have been adjusted (a write-preferring reader's lock becomes shared without a max).
    bool lock(session_id s, req::lock& r, std::optional<time_point> wait_deadline, time_point now);
    // An unlock request; true when it was served here.
    bool unlock(session_id s, const req::unlock& r, time_point now);
    void message(session_id s, req::rw_message_kind kind, std::string_view uuid, std::string_view key, time_point now);
    // live-mutex's client gave up on request `id` (lock-client-timeout); true when it was one
    // this layer made for the session.
    bool abandon(session_id s, std::string_view id, time_point now);
    void close_session(session_id s, time_point now);

    // Effects of the table for group_session. They arrive during table calls, so they are only
    // recorded; settle() acts on them (it may call the table, which records more).
    void defer(const effect& e);
    void settle(time_point now);

    // readersCount for an answer about `key` whose shared holders are `table_readers`: the
    // readers' group hold counts as the readers it stands for.
    std::uint32_t readers(std::string_view key, std::uint32_t table_readers) const noexcept;

    // Whether session `s` reads, waits to read, or is counted anywhere here.
    bool tracks(session_id s) const noexcept;

    // For tests: nothing tracked is left (every group, flag and count was cleaned up).
    bool idle() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace lmx::core
