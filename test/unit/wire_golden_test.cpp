// Golden wire frames (test/unit/wire_golden.txt): bytes in and bytes out for every message type.
// A change that alters a single byte on the wire fails here, whatever the codec's inner shape.
//
// Cases in the file:
//   == request NAME   "<" a frame as a client sends it; ">" encode_request of what it decodes to,
//                     or the error reply (write_error) when it is refused. Each frame goes
//                     through a reused request_parser and through parse_request, which agree.
//   == reply NAME     ">" what the writer case NAME below writes; "=" its decoding by
//                     parse_reply, field by field; ":" what it means to the client (decode_reply).
//   == reply-in NAME  "<" a frame from another broker (live-mutex's); "=" and ":" its decodings.
// LMX_GOLDEN_WRITE=1 rewrites the outputs of the file from the code (then review `git diff`).

#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace core = lmx::core;
using core::errc;
using std::chrono::milliseconds;

namespace {

const std::string golden_path = std::string(LMX_UNIT_DATA_DIR) + "/wire_golden.txt";

struct golden_case {
    std::string kind;  // request, reply, reply-in
    std::string name;
    std::string input;   // "<"
    std::string output;  // ">"
    std::string fields;  // "="
    std::string typed;   // ":"
};

struct golden_file {
    std::vector<std::string> header;  // the leading comment lines
    std::vector<golden_case> cases;
};

golden_file read_golden() {
    std::ifstream in(golden_path);
    BOOST_TEST_REQUIRE(static_cast<bool>(in), "cannot read " << golden_path);
    golden_file file;
    std::string line;
    while (std::getline(in, line)) {
        if (line.starts_with("== ")) {
            const auto space = line.find(' ', 3);
            BOOST_TEST_REQUIRE(space != std::string::npos, "bad case line: " << line);
            file.cases.push_back({line.substr(3, space - 3), line.substr(space + 1), {}, {}, {}, {}});
        } else if (line.starts_with("#") && file.cases.empty()) {
            file.header.push_back(line);
        } else if (line.size() >= 2 && line[1] == ' ' && !file.cases.empty() &&
                   (line[0] == '<' || line[0] == '>' || line[0] == '=' || line[0] == ':')) {
            auto& c = file.cases.back();
            auto& slot = line[0] == '<' ? c.input : line[0] == '>' ? c.output : line[0] == '=' ? c.fields : c.typed;
            BOOST_TEST_REQUIRE(slot.empty(), "case " << c.name << " has two '" << line[0] << "' lines");
            slot = line.substr(2);
        } else {
            BOOST_TEST_REQUIRE(line.empty(), "unreadable line in " << golden_path << ": " << line);
        }
    }
    return file;
}

void write_golden(const golden_file& file) {
    std::ofstream out(golden_path, std::ios::trunc);
    for (const auto& h : file.header) out << h << '\n';
    for (const auto& c : file.cases) {
        out << "\n== " << c.kind << ' ' << c.name << '\n';
        if (!c.input.empty()) out << "< " << c.input << '\n';
        if (!c.output.empty()) out << "> " << c.output << '\n';
        if (!c.fields.empty()) out << "= " << c.fields << '\n';
        if (!c.typed.empty()) out << ": " << c.typed << '\n';
    }
}

// One line: the frame without its '\n' (a frame with another '\n' inside would show here).
std::string strip_newline(std::string frame) {
    BOOST_TEST(frame.ends_with('\n'), "frame without its newline: " << frame);
    if (frame.ends_with('\n')) frame.pop_back();
    BOOST_TEST(frame.find('\n') == std::string::npos, "frame of more than one line: " << frame);
    return frame;
}

std::string answer_to(const core::parse_result& r) {
    std::string out;
    if (r.ok())
        core::encode_request(r.value(), out);
    else
        core::write_error(out, r.error());
    return strip_newline(std::move(out));
}

// Text on one line: backslash, quote and control characters escaped.
std::string escaped(std::string_view v) {
    std::string out;
    for (const char c : v) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7f) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[u >> 4];
            out += hex[u & 0xf];
        } else {
            out += c;
        }
    }
    return out;
}

// The decoded reply, every field it carries, in declaration order.
std::string describe(const core::reply& r) {
    std::ostringstream s;
    const auto text = [&](std::string_view name, std::string_view v) {
        if (!v.empty()) s << ' ' << name << '=' << escaped(v);
    };
    const auto flag = [&](std::string_view name, const std::optional<bool>& v) {
        if (v) s << ' ' << name << '=' << (*v ? "true" : "false");
    };
    const auto number = [&](std::string_view name, const auto& v) {
        if (v) s << ' ' << name << '=' << *v;
    };
    const auto list = [&](std::string_view name, const std::vector<std::string>& v) {
        if (v.empty()) return;
        s << ' ' << name << "=[";
        for (std::size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << escaped(v[i]);
        s << ']';
    };
    s << "type=" << r.type;
    text("uuid", r.uuid);
    text("key", r.key);
    flag("acquired", r.acquired);
    flag("queued", r.queued);
    flag("unlocked", r.unlocked);
    flag("extended", r.extended);
    flag("cancelled", r.cancelled);
    flag("released", r.released);
    flag("watching", r.watching);
    if (r.error) s << " error=\"" << escaped(*r.error) << '"';
    text("code", r.code);
    if (r.warning) s << " warning=\"" << escaped(*r.warning) << '"';
    number("token", r.token);
    number("lock_request_count", r.lock_request_count);
    number("readers_count", r.readers_count);
    number("position", r.position);
    if (r.lock_id) s << " lock_id=" << escaped(*r.lock_id);
    list("keys", r.keys);
    if (!r.fencing_tokens.empty()) {
        s << " fencing_tokens=[";
        for (std::size_t i = 0; i < r.fencing_tokens.size(); ++i)
            s << (i ? "," : "") << escaped(r.fencing_tokens[i].first) << ':' << r.fencing_tokens[i].second;
        s << ']';
    }
    if (r.contended_key) s << " contended_key=" << escaped(*r.contended_key);
    if (r.expires_in)
        s << " expires_in="
          << (*r.expires_in == core::no_expiry ? std::string("never") : std::to_string(r.expires_in->count()));
    list("ls_result", r.ls_result);
    number("cursor", r.cursor);
    flag("held", r.held);
    if (r.limits) {
        s << " limits=" << r.limits->max_message_size << '/' << r.limits->max_key_length << '/' << r.limits->max_keys
          << '/' << r.limits->max_id_length << '/' << r.limits->max_duration.count();
    }
    if (r.lock_info) s << " lock_info=true";
    flag("is_locked", r.is_locked);
    list("lockholder_uuids", r.lockholder_uuids);
    number("max", r.max);
    number("timestamp", r.timestamp);
    number("server_timestamp", r.server_timestamp);
    text("broker", r.broker);
    number("protocol", r.protocol);
    text("session", r.session);
    text("epoch", r.epoch);
    list("features", r.features);
    if (!r.stats.empty()) s << " stats=" << boost::json::serialize(r.stats);
    text("client_version", r.client_version);
    text("broker_version", r.broker_version);
    text("reason", r.reason);
    text("event", r.event);
    return s.str();
}

template <class... F>
struct overloaded : F... {
    using F::operator()...;
};
template <class... F>
overloaded(F...) -> overloaded<F...>;

// The typed reply: its kind, then what the client reads from it.
std::string describe(const core::typed_reply& t) {
    namespace rep = core::rep;
    std::ostringstream s;
    s << std::boolalpha;
    const auto list = [&](std::string_view name, const std::vector<std::string>& v) {
        s << ' ' << name << "=[";
        for (std::size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << escaped(v[i]);
        s << ']';
    };
    std::visit(overloaded{
                   [&](const rep::other& r) { s << "other type=" << escaped(r.type); },
                   [&](const rep::granted& r) { s << "granted key=" << escaped(r.key) << " token=" << r.token; },
                   [&](const rep::granted_many& r) {
                       s << "granted_many";
                       list("keys", r.keys);
                       s << " tokens=[";
                       for (std::size_t i = 0; i < r.tokens.size(); ++i)
                           s << (i ? "," : "") << escaped(r.tokens[i].first) << ':' << r.tokens[i].second;
                       s << ']';
                   },
                   [&](const rep::queued& r) { s << "queued position=" << r.position; },
                   [&](const rep::refused& r) {
                       s << "refused";
                       if (r.contended_key) s << " contended_key=" << escaped(*r.contended_key);
                   },
                   [&](const rep::unlocked& r) {
                       s << "unlocked ok=" << r.ok << " held=" << r.held << " warned=" << r.warned;
                   },
                   [&](const rep::released& r) { s << "released ok=" << r.ok; },
                   [&](const rep::extended& r) {
                       s << "extended ok=" << r.ok;
                       if (r.expires_in)
                           s << " expires_in="
                             << (*r.expires_in == core::no_expiry ? std::string("never")
                                                                  : std::to_string(r.expires_in->count()));
                   },
                   [&](const rep::cancelled& r) { s << "cancelled ok=" << r.ok; },
                   [&](const rep::lock_lost& r) {
                       s << "lock_lost key=" << escaped(r.key) << " reason=" << escaped(r.reason);
                   },
                   [&](const rep::event& r) {
                       s << "event key=" << escaped(r.key) << " name=" << escaped(r.name) << " token=" << r.token
                         << " waiters=" << r.waiters;
                   },
                   [&](const rep::hello& r) {
                       s << "hello protocol=" << r.protocol << " broker=" << escaped(r.broker)
                         << " session=" << escaped(r.session) << " epoch=" << escaped(r.epoch)
                         << " limits=" << (r.limits ? "yes" : "no");
                       list("features", r.features);
                   },
                   [&](const rep::keys_page& r) {
                       s << "keys_page";
                       list("keys", r.keys);
                       if (r.cursor) s << " cursor=" << *r.cursor;
                   },
                   [&](const rep::key_state& r) {
                       s << "key_state key=" << escaped(r.key) << " locked=" << r.locked;
                       list("holders", r.holders);
                       s << " waiters=" << r.waiters << " max=" << r.max << " last_token=" << r.last_token;
                   },
                   [&](const rep::stats& r) { s << "stats figures=" << r.figures.size(); },
                   [&](const rep::pong&) { s << "pong"; },
                   [&](const rep::failed& r) {
                       s << "failed type=" << escaped(r.type) << " code=" << escaped(r.code) << " message=\""
                         << escaped(r.message) << '"';
                   },
               },
               t);
    s << " uuid=" << escaped(core::reply_uuid(t));
    return s.str();
}

// What decode_reply makes of the frame; its kind is "refused" exactly when parse_reply refuses it.
std::string decode_typed(std::string_view frame) {
    auto r = core::decode_reply(frame);
    BOOST_TEST(r.ok() == core::parse_reply(frame).ok(), "decode_reply and parse_reply disagree on " << frame);
    if (!r.ok()) return "refused: " + r.error().message;
    return describe(r.value());
}

std::string decode_reply(std::string_view frame) {
    auto r = core::parse_reply(frame);
    if (!r.ok()) return "refused: " + r.error().message;
    return describe(r.value());
}

// The writer cases: each writes exactly one frame with fixed arguments.
std::map<std::string, std::function<void(std::string&)>> writer_cases() {
    using namespace std::string_view_literals;
    static const std::array<core::key_token, 3> tokens{{{"b", 1000002}, {"a", 1000001}, {"b", 1000002}}};
    static const std::vector<std::string> keys{"b", "a", "b"};
    static const std::vector<std::string> released{"a", "b"};
    const auto t0 = core::time_point{} + std::chrono::hours(1);
    std::map<std::string, std::function<void(std::string&)>> w;
    w["lock-granted"] = [](std::string& o) { core::write_lock_granted(o, "u1", "k", 1000001, 1, 0); };
    w["lock-granted-readers"] = [](std::string& o) { core::write_lock_granted(o, "u1", "k", 1000002, 3, 2); };
    w["lock-queued"] = [](std::string& o) { core::write_lock_queued(o, "u2", "k", 2, 0); };
    w["lock-queued-position"] = [](std::string& o) { core::write_lock_queued(o, "u2", "k", 5, 1, 4); };
    w["lock-refused"] = [](std::string& o) { core::write_lock_refused(o, "u3", "k", 1); };
    w["lock-rejected"] = [](std::string& o) { core::write_lock_rejected(o, "u4", "k", errc::timeout); };
    w["lock-rejected-message"] = [](std::string& o) {
        core::write_lock_rejected(o, "u4", "k", errc::max_pinned, "pinned to \"max\" 4\n");
    };
    w["unlock-ok"] = [](std::string& o) { core::write_unlock_ok(o, "u5", "k", 0); };
    w["unlock-ok-not-held"] = [](std::string& o) { core::write_unlock_ok(o, "u5", "k", 2, "nothing held", false); };
    w["unlock-error"] = [](std::string& o) { core::write_unlock_error(o, "u5", "k", errc::not_holder); };
    w["acquire-many-granted"] = [](std::string& o) { core::write_acquire_many_granted(o, "m1", tokens, "m1"); };
    w["acquire-many-queued"] = [](std::string& o) { core::write_acquire_many_queued(o, "m2", tokens, "b", 2); };
    w["acquire-many-queued-names"] = [](std::string& o) { core::write_acquire_many_queued(o, "m2", keys, "a", 3); };
    w["acquire-many-refused"] = [](std::string& o) { core::write_acquire_many_refused(o, "m3", tokens, "a", 1); };
    w["acquire-many-error"] = [](std::string& o) {
        core::write_acquire_many_error(o, "m4", std::span<const core::key_token>(tokens), errc::too_many_keys);
    };
    w["acquire-many-error-names"] = [](std::string& o) {
        core::write_acquire_many_error(o, "m4", std::span<const std::string>(keys), errc::cancelled, "gone");
    };
    w["acquire-many-error-no-keys"] = [](std::string& o) {
        core::write_acquire_many_error(o, "m4", std::span<const std::string>(), errc::bad_request);
    };
    w["release-many-ok"] = [](std::string& o) { core::write_release_many_ok(o, "r1", "m1", released); };
    w["release-many-error"] = [](std::string& o) { core::write_release_many_error(o, "r1", errc::not_found); };
    w["extend-ok"] = [](std::string& o) { core::write_extend_ok(o, "e1", "k", milliseconds(2500)); };
    w["extend-ok-no-expiry"] = [](std::string& o) { core::write_extend_ok(o, "e1", "k", std::nullopt); };
    w["extend-error"] = [](std::string& o) { core::write_extend_error(o, "e1", "k", errc::not_holder, "not yours"); };
    w["cancel"] = [](std::string& o) { core::write_cancel(o, "c1", true); };
    w["cancel-nothing"] = [](std::string& o) { core::write_cancel(o, "c1", false); };
    w["pin"] = [](std::string& o) { core::write_pin(o, "p1", "gpu/", 4u); };
    w["pin-removed"] = [](std::string& o) { core::write_pin(o, "p1", "gpu/", std::nullopt); };
    w["ls"] = [](std::string& o) { core::write_ls(o, "l1", released); };
    w["ls-page"] = [](std::string& o) { core::write_ls(o, "l1", released, 17u); };
    w["ls-empty"] = [](std::string& o) { core::write_ls(o, "l1", {}); };
    const auto info = [t0](bool with_holders) {
        core::key_info i;
        i.key = "k";
        i.exists = true;
        i.max = 2;
        i.holder_mode = core::lock_mode::shared;
        i.holders = {
            {"h1", 7, core::lock_mode::shared, 1000001, t0 + milliseconds(4000), t0 - milliseconds(1500), false},
            {"h2", 8, core::lock_mode::shared, 1000003, std::nullopt, t0 - milliseconds(20), true}};
        i.holder_count = 2;
        i.waiters = 1;
        i.last_token = 1000003;
        if (!with_holders) i.holders.clear(), i.holder_count = 0, i.exists = false;
        return i;
    };
    w["lock-info"] = [info, t0](std::string& o) { core::write_lock_info(o, "i1", info(true), t0); };
    w["lock-info-no-holders-list"] = [info](std::string& o) { core::write_lock_info(o, "i1", info(true)); };
    w["lock-info-free"] = [info, t0](std::string& o) { core::write_lock_info(o, "i1", info(false), t0); };
    w["pong"] = [](std::string& o) { core::write_pong(o, "g1", 1700000000123, 1700000000456); };
    w["system-stats"] = [](std::string& o) {
        core::broker_stats s;
        s.uptime_ms = 40187;
        s.connections = 3;
        s.connections_total = 17;
        s.keys = 2;
        s.holders = 2;
        s.waiters = 5;
        s.grants = 100;
        s.releases = 98;
        s.expirations = 1;
        s.timeouts = 2;
        s.messages_in = 300;
        s.messages_out = 301;
        s.connections_refused = 4;
        s.auth_refused = 5;
        s.clients_cut_off = 6;
        s.pid = 4242;
        s.top_contended = {{"hot", 4, 1}, {"warm", 1, 1}};
        core::write_system_stats(o, "s1", s);
    };
    w["hello"] = [](std::string& o) { core::write_hello(o, "h1", "lmx/1.0", 1, "s-1", {}); };
    w["hello-full"] = [](std::string& o) {
        static const std::array<std::string_view, 2> features{"acquire-many"sv, "watch"sv};
        core::codec_limits limits;
        limits.max_keys = 16;
        core::write_hello(o, "h1", "lmx/1.0", 1, "s-1", features, "e-42", &limits, "admin");
    };
    w["version-mismatch"] = [](std::string& o) { core::write_version_mismatch(o, "0.1.0", "0.2.25"); };
    w["watch"] = [](std::string& o) { core::write_watch_ack(o, "w1", true); };
    w["unwatch"] = [](std::string& o) { core::write_watch_ack(o, "w1", false); };
    w["lock-lost-ttl"] = [](std::string& o) { core::write_lock_lost(o, "k", "u1", core::lost_reason::ttl); };
    w["lock-lost-forced"] = [](std::string& o) { core::write_lock_lost(o, "k", "u1", core::lost_reason::forced); };
    w["event-granted"] = [](std::string& o) {
        core::write_event(o, core::event_kind::granted, "k", "u1", 1000001, 1u);
    };
    w["event-queued"] = [](std::string& o) { core::write_event(o, core::event_kind::queued, "k", "u2", 0, 2u); };
    w["event-released"] = [](std::string& o) { core::write_event(o, core::event_kind::released, "k", "u1"); };
    w["event-expired"] = [](std::string& o) { core::write_event(o, core::event_kind::expired, "k", ""); };
    w["event-cancelled"] = [](std::string& o) { core::write_event(o, core::event_kind::cancelled, "k", "u2"); };
    w["event-timeout"] = [](std::string& o) { core::write_event(o, core::event_kind::timeout, "k", "u2", 0, 0u); };
    w["event-forced"] = [](std::string& o) { core::write_event(o, core::event_kind::forced, "k", "u1", 1000001); };
    w["event-connections"] = [](std::string& o) { core::write_connections_event(o, 12); };
    w["rw-answer"] = [](std::string& o) {
        core::write_rw_answer(o, "register-write-flag-success", "q1", "k", 2u, true);
    };
    w["rw-answer-bare"] = [](std::string& o) { core::write_rw_answer(o, "increment-readers-success", "q2", "k"); };
    w["unknown-type"] = [](std::string& o) { core::write_unknown_type(o, "frobnicate", "x1", "k", "unknown type"); };
    w["error"] = [](std::string& o) { core::write_error(o, "x2", errc::unauthenticated); };
    w["error-key"] = [](std::string& o) {
        core::write_error(o, "x2", errc::key_too_long, "key over 1024 bytes", "kk");
    };
    w["error-bare"] = [](std::string& o) { core::write_error(o, "", errc::shutting_down); };
    w["error-escapes"] = [](std::string& o) {
        core::write_error(o, "x3", errc::bad_request, "bad \"ttl\": \\ \t \x01 \u00e9 \xe2\x82\xac");
    };
    return w;
}

// A case of each kind, checked against the file; every difference is reported.
void check(const golden_case& c, golden_case& actual,
           const std::map<std::string, std::function<void(std::string&)>>& writers, std::set<std::size_t>& kinds) {
    if (c.kind == "request") {
        BOOST_TEST_REQUIRE(!c.input.empty(), "request case " << c.name << " has no '<' line");
        static core::request_parser reused;  // reused across frames, as a connection does
        const auto first = answer_to(reused.parse(c.input));
        const auto fresh = answer_to(core::parse_request(c.input));
        BOOST_TEST(first == fresh, c.name << ": a reused parser and a fresh one disagree");
        actual.output = first;
    } else if (c.kind == "reply") {
        const auto it = writers.find(c.name);
        BOOST_TEST_REQUIRE((it != writers.end()), "reply case " << c.name << " names no writer case");
        std::string out;
        it->second(out);
        actual.output = strip_newline(std::move(out));
        actual.fields = decode_reply(actual.output);
        actual.typed = decode_typed(actual.output);
        if (auto t = core::decode_reply(actual.output); t.ok()) kinds.insert(t.value().index());
    } else if (c.kind == "reply-in") {
        actual.fields = decode_reply(c.input);
        actual.typed = decode_typed(c.input);
    } else {
        BOOST_FAIL("unknown case kind " << c.kind << " (" << c.name << ")");
    }
    BOOST_TEST(actual.output == c.output, c.kind << ' ' << c.name << ": wire bytes differ");
    BOOST_TEST(actual.fields == c.fields, c.kind << ' ' << c.name << ": decoded fields differ");
    BOOST_TEST(actual.typed == c.typed, c.kind << ' ' << c.name << ": typed decoding differs");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(wire_golden_test)

BOOST_AUTO_TEST_CASE(every_frame_matches_the_golden_file) {
    const auto file = read_golden();
    const auto writers = writer_cases();
    golden_file actual = file;
    std::set<std::string> names;
    std::set<std::size_t> request_types;
    std::set<std::size_t> reply_kinds;
    for (std::size_t i = 0; i < file.cases.size(); ++i) {
        const auto& c = file.cases[i];
        BOOST_TEST_CONTEXT(c.kind << ' ' << c.name) {
            BOOST_TEST(names.insert(c.kind + ' ' + c.name).second, "case named twice");
            check(c, actual.cases[i], writers, reply_kinds);
            if (c.kind == "request") {
                if (auto r = core::parse_request(c.input); r.ok()) request_types.insert(r.value().index());
            }
        }
    }
    // Every message type is pinned: a new one must come with its golden frames.
    for (std::size_t t = 0; t < std::variant_size_v<core::request>; ++t)
        BOOST_TEST(request_types.count(t) == 1, "no request case decodes to request alternative " << t);
    for (std::size_t t = 0; t < std::variant_size_v<core::typed_reply>; ++t)
        BOOST_TEST(reply_kinds.count(t) == 1, "no writer case decodes to typed reply alternative " << t);
    for (const auto& [name, write] : writers)
        BOOST_TEST(names.count("reply " + name) == 1, "writer case " << name << " has no golden frame");
    if (const char* w = std::getenv("LMX_GOLDEN_WRITE"); w && std::string_view(w) == "1") {
        write_golden(actual);
        BOOST_TEST_MESSAGE("rewrote " << golden_path);
    }
}

BOOST_AUTO_TEST_SUITE_END()
