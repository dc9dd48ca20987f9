#include "config_file.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/stream_parser.hpp>
#include <boost/json/value.hpp>

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string_view>

namespace lmx::app {

namespace {

namespace json = boost::json;

bool is_flag(const CLI::Option& opt) { return opt.get_expected_max() == 0; }
bool is_list(const CLI::Option& opt) { return !is_flag(opt) && opt.get_items_expected_max() > 1; }

// A value in the form the command line takes it.
bool to_arg(const json::value& v, std::string& out) {
    switch (v.kind()) {
        case json::kind::string: out = std::string(v.get_string()); return true;
        case json::kind::int64: out = std::to_string(v.get_int64()); return true;
        case json::kind::uint64: out = std::to_string(v.get_uint64()); return true;
        case json::kind::bool_: out = v.get_bool() ? "true" : "false"; return true;
        default: return false;
    }
}

// A setting's text as JSON: whole numbers written the way they are read (no sign, no leading
// zero, so that a file mode such as 0660 stays a string) become numbers.
json::value to_json(const std::string& text) {
    const bool number = !text.empty() && text.size() < 19 &&
                        text.find_first_not_of("0123456789") == std::string::npos && (text == "0" || text[0] != '0');
    if (number) return json::value(std::stoll(text));
    return json::value(text);
}

// Edits (insert, delete, replace a character) from a to b.
std::size_t distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

// " (did you mean 'ttl'?)" for a key one or two edits from a setting's name.
std::string suggestion(const CLI::App& cmd, const std::string& key) {
    std::string best;
    std::size_t best_distance = 3;
    for (const CLI::Option* opt : cmd.get_options()) {
        if (opt->get_lnames().empty() || config_key_skipped(opt->get_lnames().front())) continue;
        const std::string& name = opt->get_lnames().front();
        if (const auto d = distance(key, name); d < best_distance) {
            best = name;
            best_distance = d;
        }
    }
    return best.empty() ? std::string() : " (did you mean '" + best + "'?)";
}

std::string where(const std::string& text, std::size_t offset) {
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return std::to_string(line) + ":" + std::to_string(column);
}

}  // namespace

bool config_key_skipped(const std::string& key) { return key == "help" || key == "config" || key == "print-config"; }

std::string apply_config_file(CLI::App& cmd, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return path + ": cannot read it (" + std::strerror(errno) + ")";
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string text = buf.str();

    json::stream_parser parser;
    boost::system::error_code ec;
    const std::size_t used = parser.write(text.data(), text.size(), ec);
    if (!ec) parser.finish(ec);
    if (ec) return path + ":" + where(text, ec ? used : text.size()) + ": not valid JSON (" + ec.message() + ")";
    const json::value doc = parser.release();
    if (!doc.is_object()) return path + ": the settings are a JSON object, {\"key\": value, ...}";

    for (const auto& [name, value] : doc.get_object()) {
        const std::string key(name);
        CLI::Option* opt = config_key_skipped(key) ? nullptr : cmd.get_option_no_throw("--" + key);
        if (!opt) {
            const std::string hint = suggestion(cmd, key);
            return path + ": unknown key '" + key + "'" +
                   (hint.empty() ? " (lmx " + cmd.get_name() + " --help lists the settings)" : hint);
        }
        // null (and an empty list): the default; the command line wins.
        if (value.is_null() || opt->count() > 0 || (value.is_array() && value.get_array().empty())) continue;
        std::vector<std::string> args;
        std::string arg;
        if (value.is_array() && is_list(*opt)) {
            for (const auto& item : value.get_array()) {
                if (!to_arg(item, arg))
                    return path + ": key '" + key + "': a list of strings or whole numbers, not " +
                           json::serialize(item);
                args.push_back(arg);
            }
        } else if (!to_arg(value, arg) || (is_flag(*opt) != value.is_bool())) {
            return path + ": key '" + key + "': " +
                   (is_flag(*opt)   ? "true or false"
                    : is_list(*opt) ? "a list (or one value)"
                                    : "a string or a whole number") +
                   ", not " + json::serialize(value);
        } else {
            args.push_back(arg);
        }
        try {
            opt->clear();
            opt->add_result(args);
            opt->run_callback();
        } catch (const CLI::Error& e) {
            return path + ": key '" + key + "': " + e.what();
        }
    }
    return {};
}

std::string effective_config(const CLI::App& cmd,
                             const std::map<std::string, std::vector<std::string>>& list_defaults) {
    std::string out = "{";
    const char* sep = "\n";
    for (const CLI::Option* opt : cmd.get_options()) {
        if (opt->get_lnames().empty() || config_key_skipped(opt->get_lnames().front())) continue;
        json::value v;  // null: not set, the default applies
        std::vector<std::string> given = opt->results();
        if (const auto d = list_defaults.find(opt->get_lnames().front()); given.empty() && d != list_defaults.end())
            given = d->second;
        if (given.empty() && !opt->get_default_str().empty()) given.push_back(opt->get_default_str());
        if (is_flag(*opt)) {
            v = !given.empty() && given.back() != "false" && given.back() != "0";
        } else if (is_list(*opt)) {
            json::array list;
            for (const auto& g : given) list.push_back(to_json(g));
            v = std::move(list);
        } else if (!given.empty()) {
            v = to_json(given.back());
        }
        out += sep;
        out += "  " + json::serialize(json::value(opt->get_lnames().front())) + ": " + json::serialize(v);
        sep = ",\n";
    }
    return out + "\n}\n";
}

}  // namespace lmx::app
