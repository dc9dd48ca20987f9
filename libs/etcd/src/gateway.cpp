#include "gateway.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <charconv>

namespace lmx::etcd::gateway {

namespace json = boost::json;

namespace {
constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

[[noreturn]] void bad(const std::string& what) { throw error(error::kind::bad_reply, 0, "etcd: " + what); }

const json::object* object_at(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (!v) return nullptr;
    if (!v->is_object()) bad(std::string(field) + " is not an object");
    return &v->get_object();
}

std::string bytes_at(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (!v) return {};
    if (!v->is_string()) bad(std::string(field) + " is not a string");
    auto decoded = base64_decode(v->get_string());
    if (!decoded) bad(std::string(field) + " is not base64");
    return std::move(*decoded);
}

bool flag_at(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (!v) return false;
    if (!v->is_bool()) bad(std::string(field) + " is not a boolean");
    return v->get_bool();
}

// The gateway writes int64 fields as strings; they are sent the same way.
json::string number(std::int64_t n) { return json::string(std::to_string(n)); }

key_value read_kv(const json::object& o) {
    return {.key = bytes_at(o, "key"),
            .value = bytes_at(o, "value"),
            .create_revision = read_int(o, "create_revision"),
            .mod_revision = read_int(o, "mod_revision"),
            .version = read_int(o, "version"),
            .lease = read_int(o, "lease")};
}

json::object range_object(const std::string& key, const range_options& o) {
    json::object r;
    r["key"] = base64_encode(key);
    if (!o.range_end.empty()) r["range_end"] = base64_encode(o.range_end);
    if (o.revision) r["revision"] = number(o.revision);
    if (o.limit) r["limit"] = number(o.limit);
    if (o.keys_only) r["keys_only"] = true;
    if (o.count_only) r["count_only"] = true;
    return r;
}

json::object put_object(const put_op& p) {
    json::object r;
    r["key"] = base64_encode(p.key);
    r["value"] = base64_encode(p.value);
    if (p.lease) r["lease"] = number(p.lease);
    return r;
}

json::object delete_object(const delete_op& d) {
    json::object r;
    r["key"] = base64_encode(d.key);
    if (!d.range_end.empty()) r["range_end"] = base64_encode(d.range_end);
    return r;
}

json::object txn_object(const txn_request& t);

json::array ops_array(const std::vector<op>& ops) {
    json::array out;
    for (const auto& o : ops) {
        json::object one;
        if (const auto* p = std::get_if<put_op>(&o))
            one["request_put"] = put_object(*p);
        else if (const auto* d = std::get_if<delete_op>(&o))
            one["request_delete_range"] = delete_object(*d);
        else if (const auto* r = std::get_if<range_op>(&o))
            one["request_range"] = range_object(r->key, r->options);
        else if (const auto& n = std::get<txn_op>(o); n.txn)
            one["request_txn"] = txn_object(*n.txn);
        else
            one["request_txn"] = txn_object({});
        out.push_back(std::move(one));
    }
    return out;
}

json::object compare_object(const compare& c) {
    static constexpr std::array<std::string_view, 5> targets{"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
    static constexpr std::array<std::string_view, 5> fields{"version", "create_revision", "mod_revision", "value",
                                                            "lease"};
    static constexpr std::array<std::string_view, 4> results{"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
    const auto t = static_cast<std::size_t>(c.what);
    json::object r;
    r["key"] = base64_encode(c.key);
    r["target"] = targets.at(t);
    r["result"] = results.at(static_cast<std::size_t>(c.is));
    if (!c.range_end.empty()) r["range_end"] = base64_encode(c.range_end);
    if (c.what == compare::target::value)
        r["value"] = base64_encode(c.value);
    else
        r[fields.at(t)] = number(c.number);
    return r;
}
json::object txn_object(const txn_request& t) {
    json::object r;
    json::array compares;
    for (const auto& c : t.compares) compares.push_back(compare_object(c));
    r["compare"] = std::move(compares);
    r["success"] = ops_array(t.success);
    r["failure"] = ops_array(t.failure);
    return r;
}
}  // namespace

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                       static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                       static_cast<unsigned char>(bytes[i + 2]);
        for (int shift = 18; shift >= 0; shift -= 6) out += alphabet[(n >> shift) & 63];
    }
    if (const auto rest = bytes.size() - i; rest > 0) {
        std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
        if (rest == 2) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
        out += alphabet[(n >> 18) & 63];
        out += alphabet[(n >> 12) & 63];
        out += rest == 2 ? alphabet[(n >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (std::size_t i = 0; i < text.size(); i += 4) {
        std::uint32_t n = 0;
        int pad = 0;
        for (std::size_t j = 0; j < 4; ++j) {
            const char c = text[i + j];
            std::uint32_t v = 0;
            if (c == '=') {
                // Padding only in the last group's last two places, and nothing after it.
                if (i + 4 != text.size() || j < 2) return std::nullopt;
                ++pad;
            } else {
                if (pad) return std::nullopt;
                const auto at = alphabet.find(c);
                if (at == std::string_view::npos) return std::nullopt;
                v = static_cast<std::uint32_t>(at);
            }
            n = n << 6 | v;
        }
        out += static_cast<char>((n >> 16) & 0xff);
        if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
        if (pad < 1) out += static_cast<char>(n & 0xff);
    }
    return out;
}

std::string range_body(const std::string& key, const range_options& o) { return json::serialize(range_object(key, o)); }
std::string put_body(const put_op& p) { return json::serialize(put_object(p)); }
std::string delete_body(const delete_op& d) { return json::serialize(delete_object(d)); }

std::string txn_body(const txn_request& t) { return json::serialize(txn_object(t)); }

std::string watch_body(const std::string& key, const std::string& range_end, std::int64_t start_revision) {
    json::object create;
    create["key"] = base64_encode(key);
    if (!range_end.empty()) create["range_end"] = base64_encode(range_end);
    if (start_revision) create["start_revision"] = number(start_revision);
    json::object r;
    r["create_request"] = std::move(create);
    return json::serialize(r);
}

std::int64_t read_int(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (!v) return 0;
    if (v->is_int64()) return v->get_int64();
    if (!v->is_string()) bad(std::string(field) + " is not a number");
    const auto& s = v->get_string();
    std::int64_t n = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || end != s.data() + s.size()) bad(std::string(field) + " is not a number");
    return n;
}

std::int64_t read_revision(const json::object& answer) {
    const auto* h = object_at(answer, "header");
    return h ? read_int(*h, "revision") : 0;
}

range_result read_range(const json::object& answer) {
    range_result r;
    r.revision = read_revision(answer);
    r.count = read_int(answer, "count");
    r.more = flag_at(answer, "more");
    if (const auto* kvs = answer.if_contains("kvs")) {
        if (!kvs->is_array()) bad("kvs is not an array");
        for (const auto& kv : kvs->get_array()) {
            if (!kv.is_object()) bad("a kv is not an object");
            r.kvs.push_back(read_kv(kv.get_object()));
        }
    }
    return r;
}

namespace {
// The responses of a txn's branch (nested ones are as deep as the JSON parser's depth limit lets
// an answer be).
std::vector<op_result> read_responses(const json::object& answer) {
    std::vector<op_result> out;
    const auto* responses = answer.if_contains("responses");
    if (!responses) return out;
    if (!responses->is_array()) bad("responses is not an array");
    for (const auto& one : responses->get_array()) {
        if (!one.is_object()) bad("a response is not an object");
        const auto& o = one.get_object();
        op_result x;
        if (object_at(o, "response_put")) {
            x.what = op_result::kind::put;
        } else if (const auto* d = object_at(o, "response_delete_range")) {
            x.what = op_result::kind::deleted;
            x.deleted = read_int(*d, "deleted");
        } else if (const auto* g = object_at(o, "response_range")) {
            x.what = op_result::kind::range;
            x.range = read_range(*g);
        } else if (const auto* n = object_at(o, "response_txn")) {
            x.what = op_result::kind::txn;
            x.succeeded = flag_at(*n, "succeeded");
            x.responses = read_responses(*n);
        } else {
            bad("a txn response of an unknown kind");
        }
        out.push_back(std::move(x));
    }
    return out;
}
}  // namespace

txn_result read_txn(const json::object& answer) {
    txn_result r;
    r.revision = read_revision(answer);
    r.succeeded = flag_at(answer, "succeeded");
    r.responses = read_responses(answer);
    return r;
}

watch_batch read_watch(const json::object& message) {
    if (message.contains("error")) throw read_error(message, 200);
    const auto* result = object_at(message, "result");
    if (!result) bad("a watch message without a result");
    watch_batch b;
    b.revision = read_revision(*result);
    b.created = flag_at(*result, "created");
    b.canceled = flag_at(*result, "canceled");
    b.compact_revision = read_int(*result, "compact_revision");
    if (const auto* reason = result->if_contains("cancel_reason"); reason && reason->is_string())
        b.cancel_reason = std::string(reason->get_string());
    if (const auto* events = result->if_contains("events")) {
        if (!events->is_array()) bad("events is not an array");
        for (const auto& e : events->get_array()) {
            if (!e.is_object()) bad("an event is not an object");
            const auto& o = e.get_object();
            watch_event ev;
            if (const auto* t = o.if_contains("type")) {
                const auto* name = t->if_string();
                if (!name || (*name != "PUT" && *name != "DELETE")) bad("an event of an unknown type");
                if (*name == "DELETE") ev.what = watch_event::type::del;
            }
            if (const auto* kv = object_at(o, "kv")) ev.kv = read_kv(*kv);
            b.events.push_back(std::move(ev));
        }
    }
    return b;
}

error read_error(const json::value& answer, unsigned http_status) {
    std::string message = "etcd answered HTTP " + std::to_string(http_status);
    int code = 0;
    const json::object* o = answer.if_object();
    // A stream carries its error as {"error": {...}}.
    if (o)
        if (const auto* inner = o->if_contains("error"); inner && inner->is_object()) o = &inner->get_object();
    if (o) {
        if (const auto* m = o->if_contains("message"); m && m->is_string() && !m->get_string().empty())
            message = "etcd: " + std::string(m->get_string());
        else if (const auto* e = o->if_contains("error"); e && e->is_string())
            message = "etcd: " + std::string(e->get_string());
        if (const auto* c = o->if_contains("code"); c && c->is_int64()) code = static_cast<int>(c->get_int64());
    }
    return error(error::kind::refused, code, message);
}

}  // namespace lmx::etcd::gateway
