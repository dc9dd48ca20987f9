// Fuzzes live-mutex's read/write-lock layer (lmx::core::rw_locks) together with the lock table:
// operation sequences of read-preferring and write-preferring clients, plain lmx requests on the
// same keys, client give-ups, disconnects and time passing. After every step the table's
// invariants hold and every answer frame is one valid JSON line; once every connection has
// closed, the RW layer has nothing left and the table holds nothing for it.
//
// Input layout: one byte chooses the operation, the next bytes its session, key and details.

#include <lmx/core/memory_store.hpp>
#include <lmx/core/rw_locks.hpp>
#include <lmx/core/store_answers.hpp>

#include "fuzz_support.hpp"

#include <boost/json/parse.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace {

using namespace lmx::core;
using namespace std::chrono_literals;

constexpr session_id group = 1000;
constexpr unsigned sessions = 4;

class input {
public:
    input(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}
    bool done() const noexcept { return p_ == end_; }
    unsigned pick(unsigned n) noexcept { return (p_ != end_ ? *p_++ : 0u) % n; }
    session_id session() noexcept { return 1 + pick(sessions); }
    std::string key() { return std::string(1, "RWKX"[pick(4)]); }
    std::string id() { return "u" + std::to_string(pick(12)); }

private:
    const std::uint8_t* p_;
    const std::uint8_t* end_;
};

struct harness : effect_sink, rw_output {
    memory_store store{*this};
    lock_table& table = store.table();
    rw_locks rw{store, *this, group};
    std::map<session_id, std::string> out;
    time_point now = time_point{} + 1h;

    std::string* frames_for(session_id s) override {
        LMX_FUZZ_CHECK(s != group);
        return &out[s];
    }
    void on_effect(const effect& e) override {
        if (e.kind == effect_kind::event) return;
        if (is_answer(e.kind)) {
            if (!e.uuid.empty()) write_answer(out[e.session], e);
            return;
        }
        if (e.session == group) return rw.defer(e);
        if (e.kind == effect_kind::granted && !e.multi)
            write_lock_granted(out[e.session], e.id, e.key, e.token, e.waiters, rw.readers(e.key, e.readers));
    }

    void step(input& in) {
        const session_id s = in.session();
        switch (in.pick(14)) {
            case 0:
            case 1: {
                static constexpr std::array<std::optional<rw_status>, 5> statuses = {
                    rw_status::begin_read, rw_status::end_read, rw_status::locking_write_key, rw_status::begin_write,
                    std::nullopt};
                req::lock r{.uuid = in.id(),
                            .key = in.key(),
                            .max = in.pick(3) == 0 ? std::optional<std::uint32_t>(10) : 1u,
                            .rw = statuses[in.pick(5)]};
                if (in.pick(4) == 0) r.ttl = std::chrono::milliseconds{1 + in.pick(40)};
                if (!rw.lock(s, r, std::nullopt, now))
                    table.acquire(
                        {.session = s, .id = r.uuid, .key = r.key, .ttl = r.ttl, .max = r.max, .mode = r.mode}, now);
                break;
            }
            case 2:
            case 3: {
                static constexpr std::array<std::optional<rw_status>, 5> statuses = {
                    rw_status::begin_read, rw_status::end_read, rw_status::unlocking_write_key, rw_status::end_write,
                    std::nullopt};
                req::unlock r{.uuid = "x" + std::to_string(in.pick(100)),
                              .key = in.key(),
                              .force = in.pick(2) == 0,
                              .rw = statuses[in.pick(5)]};
                if (in.pick(2) == 0) r.lock_id = in.id();
                if (!rw.unlock(s, r, now)) {
                    if (r.lock_id && r.force)
                        table.force_release(r.key, *r.lock_id, now);
                    else if (r.lock_id)
                        table.release(r.key, *r.lock_id, now, s);
                    else if (r.force)
                        table.force_release(r.key, std::nullopt, now);
                    else
                        table.release_own(s, r.key, now);
                }
                break;
            }
            case 4:
            case 5:
                rw.message(s, static_cast<req::rw_message_kind>(in.pick(5)), "m" + std::to_string(in.pick(100)),
                           in.key(), now);
                break;
            case 6: {
                const auto id = in.id();
                if (!rw.abandon(s, id, now)) table.abandon(s, id, now);
                break;
            }
            case 7:
                table.close_session(s, now);
                rw.close_session(s, now);
                break;
            case 8:
                now += std::chrono::milliseconds{in.pick(50)};
                table.expire(now);
                break;
            default: {
                // A write-preferring or read-preferring client's usual sequence, so that deep states come often.
                const std::string id = in.id();
                if (in.pick(2) == 0) {
                    rw.message(s, req::rw_message_kind::write_flag_check, id + "c", "K", now);
                    req::lock r{.uuid = id, .key = "K", .max = 10};
                    if (!rw.lock(s, r, std::nullopt, now))
                        table.acquire({.session = s, .id = r.uuid, .key = r.key, .max = r.max, .mode = r.mode}, now);
                    rw.message(s, req::rw_message_kind::increment_readers, id + "i", "K", now);
                } else {
                    req::lock r{.uuid = id, .key = "R", .max = 10, .rw = rw_status::begin_read};
                    rw.lock(s, r, std::nullopt, now);
                    rw.settle(now);
                    req::lock w{.uuid = id + "w", .key = "W", .rw = rw_status::locking_write_key};
                    if (!rw.lock(s, w, std::nullopt, now))
                        table.acquire({.session = s, .id = w.uuid, .key = w.key}, now);
                }
                break;
            }
        }
        rw.settle(now);
        table.check_invariants();
        for (auto& [session, text] : out) check_frames(text);
    }

    static void check_frames(std::string& text) {
        std::size_t start = 0;
        for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
            boost::json::error_code ec;
            auto v = boost::json::parse(std::string_view(text).substr(start, nl - start), ec);
            LMX_FUZZ_CHECK(!ec && v.is_object());
        }
        LMX_FUZZ_CHECK(start == text.size());
        text.clear();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    input in(data, size);
    harness h;
    for (int i = 0; i < 256 && !in.done(); ++i) h.step(in);
    // Every connection closes: nothing may be left for the RW layer, in it or in the table.
    for (session_id s = 1; s <= sessions; ++s) {
        h.table.close_session(s, h.now);
        h.rw.close_session(s, h.now);
        h.rw.settle(h.now);
    }
    h.table.check_invariants();
    LMX_FUZZ_CHECK(h.rw.idle());
    for (const auto& key : h.table.list_keys())
        for (const auto& holder : h.table.info(key).holders) LMX_FUZZ_CHECK(holder.session != group);
    return 0;
}
