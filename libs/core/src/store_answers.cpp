#include <lmx/core/protocol.hpp>
#include <lmx/core/store_answers.hpp>

namespace lmx::core {

namespace {

void write_unlocked(std::string& out, const effect& e) {
    const bool named = !e.id.empty();
    if (e.style == answer_style::rw_end_write)
        return write_unlock_ok(out, e.uuid, e.key, e.waiters,
                               e.status == release_status::released ? std::string_view{}
                                                                    : "this connection held no write lock on the key");
    switch (e.status) {
        case release_status::released: return write_unlock_ok(out, e.uuid, e.key, e.waiters);
        case release_status::withdrawn:
            return write_unlock_ok(out, e.uuid, e.key, e.waiters,
                                   "the request was still waiting; it has been withdrawn");
        case release_status::already_released:
            return write_unlock_ok(out, e.uuid, e.key, e.waiters,
                                   named ? "lock " + std::string(e.id) + " was not held (already released or expired)"
                                         : std::string("no holder to release"),
                                   false);
        case release_status::not_holder:
            return write_unlock_error(
                out, e.uuid, e.key, errc::not_holder,
                named ? "lock " + std::string(e.id) + " does not hold " + std::string(e.key) : std::string());
    }
}

}  // namespace

void write_answer(std::string& out, const effect& e) {
    switch (e.kind) {
        case effect_kind::unlocked: return write_unlocked(out, e);
        case effect_kind::extended:
            if (e.code != errc::ok)
                return write_extend_error(
                    out, e.uuid, e.key, e.code,
                    "lock " + std::string(e.id) + " does not hold " + std::string(e.key) + " (expired or released)");
            return write_extend_ok(out, e.uuid, e.key, e.lease);
        case effect_kind::released_many:
            if (e.code != errc::ok)
                return write_release_many_error(out, e.uuid, e.code, "no multi-key lock " + std::string(e.id));
            return write_release_many_ok(out, e.uuid, e.id, e.names);
        case effect_kind::cancelled: return write_cancel(out, e.uuid, e.done);
        default: return;
    }
}

}  // namespace lmx::core
