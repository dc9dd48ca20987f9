#include <lmx/core/failpoint.hpp>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

namespace lmx::failpoint {

namespace {

struct term {
    action act;
    long count = -1;  // hits left; -1: every later hit
};

struct registry {
    std::mutex mu;
    std::map<std::string, std::vector<term>, std::less<>> points;
    bool loaded = false;
};

registry& reg() {
    static registry r;
    return r;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool parse_number(std::string_view s, long& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size() && out >= 0;
}

std::string parse_term(std::string_view text, term& t) {
    text = trim(text);
    if (auto star = text.find('*'); star != std::string_view::npos) {
        if (!parse_number(trim(text.substr(0, star)), t.count)) return "bad count in '" + std::string(text) + "'";
        text = trim(text.substr(star + 1));
    }
    if (text == "off")
        t.act.what = action::kind::off;
    else if (text == "error")
        t.act.what = action::kind::error;
    else if (text == "abort")
        t.act.what = action::kind::abort;
    else if (text.starts_with("sleep(") && text.ends_with(")")) {
        long ms = 0;
        if (!parse_number(text.substr(6, text.size() - 7), ms)) return "bad sleep in '" + std::string(text) + "'";
        t.act.what = action::kind::sleep;
        t.act.delay = std::chrono::milliseconds(ms);
    } else {
        return "unknown action '" + std::string(text) + "' (off, error, sleep(MS), abort)";
    }
    return {};
}

std::string parse(std::string_view spec, std::map<std::string, std::vector<term>, std::less<>>& out) {
    while (!spec.empty()) {
        auto semi = spec.find(';');
        auto item = trim(spec.substr(0, semi));
        spec = semi == std::string_view::npos ? std::string_view{} : spec.substr(semi + 1);
        if (item.empty()) continue;
        auto eq = item.find('=');
        if (eq == std::string_view::npos) return "expected NAME=ACTIONS in '" + std::string(item) + "'";
        std::vector<term> chain;
        auto rest = item.substr(eq + 1);
        for (;;) {
            auto arrow = rest.find("->");
            term t;
            if (auto err = parse_term(rest.substr(0, arrow), t); !err.empty()) return err;
            chain.push_back(t);
            if (arrow == std::string_view::npos) break;
            rest = rest.substr(arrow + 2);
        }
        out[std::string(trim(item.substr(0, eq)))] = std::move(chain);
    }
    return {};
}

}  // namespace

std::string configure(std::string_view spec) {
    std::map<std::string, std::vector<term>, std::less<>> points;
    auto err = parse(spec, points);
    if (!err.empty()) return err;
    auto& r = reg();
    std::lock_guard lock(r.mu);
    r.points = std::move(points);
    r.loaded = true;
    return {};
}

action hit(std::string_view name) noexcept {
    auto& r = reg();
    std::lock_guard lock(r.mu);
    if (!r.loaded) {
        r.loaded = true;
        if (const char* env = std::getenv("LMX_FAILPOINTS")) {
            if (auto err = parse(env, r.points); !err.empty()) {
                std::fprintf(stderr, "LMX_FAILPOINTS: %s\n", err.c_str());
                std::abort();  // a test that asked for a fault must not run without it
            }
        }
    }
    auto it = r.points.find(name);
    if (it == r.points.end()) return {};
    auto& chain = it->second;
    while (!chain.empty() && chain.front().count == 0) chain.erase(chain.begin());
    if (chain.empty()) return {};
    term& t = chain.front();
    action a = t.act;
    if (t.count > 0 && --t.count == 0) chain.erase(chain.begin());
    if (a.what == action::kind::abort) std::abort();
    return a;
}

}  // namespace lmx::failpoint
