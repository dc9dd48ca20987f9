// Reply codec, both directions, from one input:
// - parse_reply on the raw bytes, as a client reads broker frames; a reply it accepts must read
//   the same through the DOM reader (a copy of the frame the flat reader leaves alone), and
//   decode_reply must accept exactly what parse_reply accepts;
// - the same bytes, read as writer arguments (valid UTF-8 strings, any numbers), drive one reply
//   writer appending to a non-empty buffer: the frame must be one valid UTF-8 line, leave what was
//   in the buffer alone, and parse_reply must give back exactly the fields written.

#include "fuzz_support.hpp"

#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace lmx::core;
using lmx::fuzz::one_line;
using lmx::fuzz::valid_utf8;
using std::chrono::milliseconds;

void read_any(std::string_view frame) {
    const reply_result first = parse_reply(frame);
    // Every frame the reader accepts has a meaning, and decode_reply agrees with classify.
    const typed_reply_result typed = decode_reply(frame);
    LMX_FUZZ_CHECK(typed.ok() == first.ok());
    if (!first.ok()) return;
    LMX_FUZZ_CHECK(typed.value() == classify(reply(first.value())));
    if (const auto padded = lmx::fuzz::with_ignored_member(frame)) {
        const reply_result dom = parse_reply(*padded);
        LMX_FUZZ_CHECK(dom.ok());
        LMX_FUZZ_CHECK(dom.value() == first.value());
    }
}

unsigned count_error_codes() {
    unsigned n = 0;
    while (n < 256 && to_string(static_cast<errc>(n)) != "unknown") ++n;
    return n;
}

std::uint64_t as_u64(const boost::json::value* v) {
    LMX_FUZZ_CHECK(v != nullptr);
    if (v->is_uint64()) return v->get_uint64();
    LMX_FUZZ_CHECK(v->is_int64() && v->get_int64() >= 0);
    return static_cast<std::uint64_t>(v->get_int64());
}

std::vector<std::string> sorted_unique(std::vector<std::string> keys) {
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return keys;
}

// write_hello's `epoch` is written when non-empty and read back.
template <class Reply, class Features>
void write_hello_case(std::string& out, Reply& want, std::string_view uuid, std::string_view broker,
                      std::uint32_t protocol, std::string_view session, const Features& features,
                      std::string_view epoch) {
    write_hello(out, uuid, broker, protocol, session, features, epoch);
    want.epoch = epoch;
}

// write_ls's `cursor` (written when set) is the start of the next page of keys.
template <class Reply>
void write_ls_case(std::string& out, Reply& want, std::string_view uuid, const std::vector<std::string>& keys,
                   std::optional<std::uint64_t> cursor) {
    write_ls(out, uuid, keys, cursor);
    want.cursor = cursor;
}

class writer_case {
public:
    explicit writer_case(FuzzedDataProvider& in) : in_(in) {}

    void run() {
        static const unsigned error_codes = count_error_codes();
        codes_ = error_codes;
        std::string out = prefix();
        const std::string before = out;
        reply want;
        write(out, want);
        LMX_FUZZ_CHECK(out.compare(0, before.size(), before) == 0);
        const std::string_view frame = std::string_view(out).substr(before.size());
        LMX_FUZZ_CHECK(one_line(frame));
        LMX_FUZZ_CHECK(valid_utf8(frame));
        const reply_result got = parse_reply(frame);
        LMX_FUZZ_CHECK(got.ok());
        reply r = got.value();
        if (stats_) {
            check_stats(r.stats);
            r.stats.clear();
        }
        LMX_FUZZ_CHECK(r == want);
    }

private:
    std::string text(std::size_t max = 40) { return lmx::fuzz::to_valid_utf8(in_.ConsumeRandomLengthString(max)); }
    // Short keys from a small alphabet repeat, so key lists get duplicates and orderings to sort.
    std::string key() {
        return in_.ConsumeBool() ? std::string(1, static_cast<char>('a' + in_.ConsumeIntegralInRange(0, 3))) : text(12);
    }
    std::vector<std::string> keys(std::size_t min = 0) {
        std::vector<std::string> v(in_.ConsumeIntegralInRange<std::size_t>(min, 6));
        for (auto& k : v) k = key();
        return v;
    }
    errc code() { return static_cast<errc>(in_.ConsumeIntegralInRange<unsigned>(0, codes_ - 1)); }
    template <class T>
    T num() {
        return in_.ConsumeIntegral<T>();
    }

    std::string prefix() {
        switch (in_.ConsumeIntegralInRange(0, 2)) {
            case 0: return {};
            case 1: return std::string(in_.ConsumeIntegralInRange<std::size_t>(1, 600), 'x');
            default: {
                std::string s;
                write_pong(s, "p", 1, 2);
                return s;
            }
        }
    }

    void failure(reply& want, errc c, const std::string& message) {
        want.error = std::string(message.empty() ? default_message(c) : message);
        want.code = std::string(to_string(c));
    }

    void write(std::string& out, reply& want) {
        const std::string uuid = text();
        want.uuid = uuid;
        switch (in_.ConsumeIntegralInRange(0, 27)) {
            case 0: {
                const auto k = key();
                const auto token = num<fencing_token>();
                const auto waiters = num<std::uint32_t>(), readers = num<std::uint32_t>();
                write_lock_granted(out, uuid, k, token, waiters, readers);
                want.type = "lock";
                want.key = k;
                want.acquired = true;
                want.token = token;
                want.lock_request_count = waiters;
                want.readers_count = readers;
                break;
            }
            case 1: {
                const auto k = key();
                const auto waiters = num<std::uint32_t>(), readers = num<std::uint32_t>(),
                           position = in_.ConsumeBool() ? 0 : num<std::uint32_t>();
                write_lock_queued(out, uuid, k, waiters, readers, position);
                want.type = "lock";
                want.key = k;
                want.acquired = false;
                want.queued = true;
                want.lock_request_count = waiters;
                want.readers_count = readers;
                if (position != 0) want.position = position;
                break;
            }
            case 2: {
                const auto k = key();
                const auto waiters = num<std::uint32_t>();
                write_lock_refused(out, uuid, k, waiters);
                want.type = "lock";
                want.key = k;
                want.acquired = false;
                want.queued = false;
                want.lock_request_count = waiters;
                break;
            }
            case 3: {
                const auto k = key();
                const auto c = code();
                const auto message = text();
                write_lock_rejected(out, uuid, k, c, message);
                want.type = "lock";
                want.key = k;
                want.acquired = false;
                failure(want, c, message);
                break;
            }
            case 4: {
                const auto k = key();
                const auto waiters = num<std::uint32_t>();
                const auto warning = text();
                write_unlock_ok(out, uuid, k, waiters, warning);
                want.type = "unlock";
                want.key = k;
                want.unlocked = true;
                want.lock_request_count = waiters;
                if (!warning.empty()) want.warning = warning;
                break;
            }
            case 5: {
                const auto k = key();
                const auto c = code();
                const auto message = text();
                write_unlock_error(out, uuid, k, c, message);
                want.type = "unlock";
                want.key = k;
                want.unlocked = false;
                failure(want, c, message);
                break;
            }
            case 6: {
                const auto names = keys(1);
                std::vector<key_token> tokens;
                std::map<std::string, fencing_token> first_token;
                for (const auto& k : names) {
                    tokens.push_back({k, num<fencing_token>()});
                    first_token.emplace(k, tokens.back().token);
                }
                const auto lock_id = text();
                write_acquire_many_granted(out, uuid, tokens, lock_id);
                want.type = "acquire-many";
                want.keys = sorted_unique(names);
                want.acquired = true;
                want.lock_id = lock_id;
                want.fencing_tokens.assign(first_token.begin(), first_token.end());
                break;
            }
            case 7:
            case 8: {
                const auto names = keys(1);
                const auto contended = key();
                const auto waiters = num<std::uint32_t>();
                if (in_.ConsumeBool()) {
                    std::vector<key_token> tokens;
                    for (const auto& k : names) tokens.push_back({k, 0});
                    write_acquire_many_queued(out, uuid, tokens, contended, waiters);
                } else {
                    write_acquire_many_queued(out, uuid, std::span<const std::string>(names), contended, waiters);
                }
                want.type = "acquire-many";
                want.keys = sorted_unique(names);
                want.acquired = false;
                want.queued = true;
                want.contended_key = contended;
                want.lock_request_count = waiters;
                break;
            }
            case 9: {
                const auto names = keys(1);
                std::vector<key_token> tokens;
                for (const auto& k : names) tokens.push_back({k, 0});
                const auto contended = in_.ConsumeBool() ? std::string() : key();
                const auto waiters = num<std::uint32_t>();
                write_acquire_many_refused(out, uuid, tokens, contended, waiters);
                want.type = "acquire-many";
                want.keys = sorted_unique(names);
                want.acquired = false;
                want.queued = false;
                if (!contended.empty()) want.contended_key = contended;
                want.lock_request_count = waiters;
                break;
            }
            case 10: {
                const auto names = keys();
                const auto c = code();
                const auto message = text();
                if (in_.ConsumeBool()) {
                    std::vector<key_token> tokens;
                    for (const auto& k : names) tokens.push_back({k, 0});
                    write_acquire_many_error(out, uuid, tokens, c, message);
                } else {
                    write_acquire_many_error(out, uuid, std::span<const std::string>(names), c, message);
                }
                want.type = "acquire-many";
                want.keys = sorted_unique(names);
                want.acquired = false;
                failure(want, c, message);
                break;
            }
            case 11: {
                const auto lock_id = text();
                const auto names = keys();
                write_release_many_ok(out, uuid, lock_id, names);
                want.type = "release-many";
                want.lock_id = lock_id;
                want.keys = sorted_unique(names);
                want.released = true;
                break;
            }
            case 12: {
                const auto c = code();
                const auto message = text();
                write_release_many_error(out, uuid, c, message);
                want.type = "release-many";
                want.released = false;
                failure(want, c, message);
                break;
            }
            case 13: {
                const auto k = key();
                std::optional<milliseconds> expires;
                switch (in_.ConsumeIntegralInRange(0, 2)) {
                    case 0: break;
                    case 1: expires = no_expiry; break;
                    default: expires = milliseconds{num<std::int64_t>()};
                }
                write_extend_ok(out, uuid, k, expires);
                want.type = "extend";
                want.key = k;
                want.extended = true;
                want.expires_in = !expires || *expires == no_expiry ? no_expiry : std::max(*expires, milliseconds{0});
                break;
            }
            case 14: {
                const auto k = key();
                const auto c = code();
                const auto message = text();
                write_extend_error(out, uuid, k, c, message);
                want.type = "extend";
                want.key = k;
                want.extended = false;
                failure(want, c, message);
                break;
            }
            case 15: {
                const bool cancelled = in_.ConsumeBool();
                write_cancel(out, uuid, cancelled);
                want.type = "cancel";
                want.cancelled = cancelled;
                break;
            }
            case 16: {
                const auto names = keys();
                std::optional<std::uint64_t> cursor;
                if (in_.ConsumeBool()) cursor = num<std::uint64_t>();
                write_ls_case(out, want, uuid, names, cursor);
                want.type = "ls";
                want.ls_result = names;
                break;
            }
            case 17: {
                key_info info;
                info.key = key();
                info.exists = in_.ConsumeBool();
                info.max = num<std::uint32_t>();
                info.waiters = num<std::uint32_t>();
                info.last_token = num<fencing_token>();
                const time_point now = time_point{} + std::chrono::hours{1000};
                const auto span_ns = [&] {
                    return std::chrono::nanoseconds{in_.ConsumeIntegralInRange<std::int64_t>(0, std::int64_t{1} << 50)};
                };
                for (std::size_t i = in_.ConsumeIntegralInRange<std::size_t>(0, 4); i > 0; --i) {
                    holder_info h{};
                    h.id = text(12);
                    h.session = num<session_id>();
                    h.mode = in_.ConsumeBool() ? lock_mode::shared : lock_mode::exclusive;
                    h.token = num<fencing_token>();
                    if (in_.ConsumeBool()) h.expires = in_.ConsumeBool() ? now + span_ns() : now - span_ns();
                    h.since = now - span_ns();
                    h.keep_on_exit = in_.ConsumeBool();
                    info.holders.push_back(std::move(h));
                }
                write_lock_info(out, uuid, info, in_.ConsumeBool() ? std::optional(now) : std::nullopt);
                want.type = "lock-info-response";
                want.key = info.key;
                want.lock_info = true;
                want.is_locked = !info.holders.empty();
                for (const auto& h : info.holders) want.lockholder_uuids.push_back(h.id);
                want.lock_request_count = info.waiters;
                want.max = info.max;
                want.token = info.last_token;
                break;
            }
            case 18: {
                const auto ts = num<std::int64_t>(), server = num<std::int64_t>();
                write_pong(out, uuid, ts, server);
                want.type = "pong";
                want.timestamp = ts;
                want.server_timestamp = server;
                break;
            }
            case 19: {
                stats_.emplace();
                auto& s = *stats_;
                s.uptime_ms = num<std::uint64_t>();
                s.connections = num<std::uint64_t>();
                s.keys = num<std::uint64_t>();
                s.holders = num<std::uint64_t>();
                s.waiters = num<std::uint64_t>();
                s.grants = num<std::uint64_t>();
                s.pid = in_.ConsumeBool() ? 0 : num<std::int64_t>();
                for (std::size_t i = in_.ConsumeIntegralInRange<std::size_t>(0, 3); i > 0; --i)
                    s.top_contended.push_back({key(), num<std::uint32_t>(), num<std::uint32_t>()});
                write_system_stats(out, uuid, s);
                want.type = "system-stats-response";
                break;
            }
            case 20: {
                const auto broker = text(), session = text();
                const auto protocol = num<std::uint32_t>();
                const auto feature_names = keys();
                const std::vector<std::string_view> features(feature_names.begin(), feature_names.end());
                write_hello_case(out, want, uuid, broker, protocol, session, features, in_.ConsumeBool() ? "" : text());
                want.type = "hello";
                want.broker = broker;
                want.protocol = protocol;
                want.session = session;
                want.features = feature_names;
                break;
            }
            case 21: {
                const auto client = text(), broker = text();
                write_version_mismatch(out, client, broker);
                want = reply{};
                want.type = "version-mismatch";
                want.client_version = client;
                want.broker_version = broker;
                break;
            }
            case 22: {
                const bool watching = in_.ConsumeBool();
                write_watch_ack(out, uuid, watching);
                want.type = watching ? "watch" : "unwatch";
                want.watching = watching;
                break;
            }
            case 23: {
                const auto k = key();
                const auto reason = in_.ConsumeBool() ? lost_reason::ttl : lost_reason::forced;
                write_lock_lost(out, k, uuid, reason);
                want.type = "lock-lost";
                want.key = k;
                want.reason = std::string(to_string(reason));
                break;
            }
            case 24: {
                const auto k = key();
                const auto kind = static_cast<event_kind>(in_.ConsumeIntegralInRange(0, 6));
                const fencing_token token = in_.ConsumeBool() ? 0 : num<fencing_token>();
                std::optional<std::uint32_t> waiters;
                if (in_.ConsumeBool()) waiters = num<std::uint32_t>();
                write_event(out, kind, k, uuid, token, waiters);
                want.type = "event";
                want.event = std::string(to_string(kind));
                want.key = k;
                if (token != 0) want.token = token;
                want.lock_request_count = waiters;
                break;
            }
            case 25: {
                write_connections_event(out, num<std::size_t>());
                want = reply{};
                want.type = "event";
                want.event = "connections";
                break;
            }
            case 26: {
                const auto c = code();
                const auto message = text();
                const auto k = in_.ConsumeBool() ? std::string() : key();
                write_error(out, uuid, c, message, k);
                want.type = "error";
                want.key = k;
                failure(want, c, message);
                break;
            }
            default: {
                parse_error e;
                e.code = code();
                e.message = text();
                e.uuid = uuid;
                e.type = text();
                e.key = key();
                write_error(out, e);
                want.type = "error";
                want.key = e.key;
                failure(want, e.code, e.message);
                break;
            }
        }
    }

    void check_stats(const boost::json::object& got) const {
        const broker_stats& s = *stats_;
        LMX_FUZZ_CHECK(as_u64(got.if_contains("uptimeMs")) == s.uptime_ms);
        LMX_FUZZ_CHECK(as_u64(got.if_contains("connections")) == s.connections);
        LMX_FUZZ_CHECK(as_u64(got.if_contains("keys")) == s.keys);
        LMX_FUZZ_CHECK(as_u64(got.if_contains("holders")) == s.holders);
        LMX_FUZZ_CHECK(as_u64(got.if_contains("waiters")) == s.waiters);
        LMX_FUZZ_CHECK(as_u64(got.if_contains("grants")) == s.grants);
        // Seconds with three decimals; Boost 1.81 reads doubles to within an ulp or so.
        const auto* uptime = got.if_contains("uptime");
        LMX_FUZZ_CHECK(uptime && uptime->is_double());
        const double want = static_cast<double>(s.uptime_ms) / 1000.0;
        LMX_FUZZ_CHECK(std::fabs(uptime->get_double() - want) <= want * 1e-12);
        const auto* pid = got.if_contains("pid");
        LMX_FUZZ_CHECK(s.pid == 0 ? pid == nullptr : pid && pid->is_int64() && pid->get_int64() == s.pid);
        const auto* top = got.if_contains("topContendedKeys");
        LMX_FUZZ_CHECK(top && top->is_array() && top->get_array().size() == s.top_contended.size());
        for (std::size_t i = 0; i < s.top_contended.size(); ++i) {
            const auto& entry = top->get_array()[i];
            LMX_FUZZ_CHECK(entry.is_object());
            const auto* k = entry.get_object().if_contains("key");
            LMX_FUZZ_CHECK(k && k->is_string() && k->get_string() == s.top_contended[i].key);
            LMX_FUZZ_CHECK(as_u64(entry.get_object().if_contains("waiters")) == s.top_contended[i].waiters);
        }
    }

    FuzzedDataProvider& in_;
    unsigned codes_ = 1;
    std::optional<broker_stats> stats_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    read_any(std::string_view(reinterpret_cast<const char*>(data), size));
    FuzzedDataProvider in(data, size);
    writer_case(in).run();
    return 0;
}
