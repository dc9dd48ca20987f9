#include <lmx/client/client.hpp>
#include <lmx/client/settings.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace lmx {

namespace fs = std::filesystem;

std::string settings_path() {
    const char* xdg = std::getenv("XDG_CONFIG_HOME");
    if (xdg && *xdg) return std::string(xdg) + "/lmx/config.json";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.config/lmx/config.json";
}

namespace {
std::optional<std::uint16_t> parse_port(std::string_view s) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size() || v == 0 || v > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(v);
}
}  // namespace

std::optional<connection_settings> load_settings(std::string* error) {
    std::string path = settings_path();
    std::ifstream in(path);
    if (!in) return connection_settings{};
    std::stringstream ss;
    ss << in.rdbuf();
    boost::system::error_code ec;
    auto v = boost::json::parse(ss.str(), ec);
    auto fail = [&](const std::string& why) -> std::optional<connection_settings> {
        if (error) *error = path + ": " + why;
        return std::nullopt;
    };
    if (ec || !v.is_object()) return fail("not a JSON object; fix or delete the file (lmx unset NAME)");
    connection_settings s;
    auto& o = v.as_object();
    for (auto& [k, val] : o) {
        if (k == "port") {
            if (val.is_int64() && val.as_int64() > 0 && val.as_int64() <= 65535)
                s.port = static_cast<std::uint16_t>(val.as_int64());
            else if (val.is_string() && parse_port(val.as_string()))
                s.port = parse_port(val.as_string());
            else
                return fail("port must be a number from 1 to 65535");
        } else if (k == "url" || k == "host" || k == "uds_path" || k == "token_file") {
            if (!val.is_string()) return fail(std::string(k) + " must be a string");
            std::string str(val.as_string());
            if (k == "url")
                s.url = str;
            else if (k == "host")
                s.host = str;
            else if (k == "token_file")
                s.token_file = str;
            else
                s.uds_path = str;
        }
    }
    return s;
}

bool save_settings(const connection_settings& s, std::string* error) {
    std::string path = settings_path();
    std::error_code fec;
    fs::create_directories(fs::path(path).parent_path(), fec);
    boost::json::object o;
    if (s.url) o["url"] = *s.url;
    if (s.uds_path) o["uds_path"] = *s.uds_path;
    if (s.host) o["host"] = *s.host;
    if (s.port) o["port"] = *s.port;
    if (s.token_file) o["token_file"] = *s.token_file;
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << boost::json::serialize(o) << "\n";
        if (!out) {
            if (error) *error = "cannot write " + tmp + ": " + std::strerror(errno);
            return false;
        }
    }
    fs::rename(tmp, path, fec);
    if (fec) {
        if (error) *error = "cannot replace " + path + ": " + fec.message();
        return false;
    }
    return true;
}

std::optional<connection_settings> env_settings(std::string* error) {
    connection_settings s;
    auto get = [](const char* name) -> std::optional<std::string> {
        const char* v = std::getenv(name);
        if (!v || !*v) return std::nullopt;
        return std::string(v);
    };
    s.url = get("LMX_URL");
    s.uds_path = get("LMX_UDS_PATH");
    s.host = get("LMX_HOST");
    s.token_file = get("LMX_TOKEN_FILE");
    if (auto p = get("LMX_PORT")) {
        s.port = parse_port(*p);
        if (!s.port) {
            if (error) *error = "LMX_PORT must be a number from 1 to 65535, not '" + *p + "'";
            return std::nullopt;
        }
    }
    return s;
}

std::string resolve_url(std::span<const connection_settings> layers) {
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const auto& l = layers[i];
        if (l.empty()) continue;
        if (l.url) return *l.url;
        if (l.uds_path) return "unix://" + *l.uds_path;
        std::optional<std::string> host = l.host;
        std::optional<std::uint16_t> port = l.port;
        for (std::size_t j = i + 1; j < layers.size(); ++j) {
            if (!host) host = layers[j].host;
            if (!port) port = layers[j].port;
        }
        std::string h = host.value_or("127.0.0.1");
        if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";
        return "tcp://" + h + ":" + std::to_string(port.value_or(6970));
    }
    return "tcp://127.0.0.1:6970";
}

std::string read_token_file(const std::string& path, std::string* error) {
    std::ifstream in(path);
    if (!in) {
        if (error) *error = "cannot read the token file " + path + ": " + std::strerror(errno);
        return {};
    }
    std::string word;
    for (std::string line; std::getline(in, line);) {
        std::istringstream words(line);
        if (words >> word && word.front() != '#') return word;
    }
    if (error) *error = "the token file " + path + " holds no token";
    return {};
}

client_options client_options::from_env() { return from_env(client_options{}); }

client_options client_options::from_env(client_options base) {
    std::vector<connection_settings> layers;
    if (auto e = env_settings()) layers.push_back(*e);
    if (auto f = load_settings()) layers.push_back(*f);
    layers.push_back(connection_settings{.url = base.url, .uds_path = {}, .host = {}, .port = {}, .token_file = {}});
    base.url = resolve_url(layers);
    for (auto [field, name] :
         {std::pair{&base.tls_ca_file, "LMX_TLS_CA"}, std::pair{&base.tls_cert_file, "LMX_TLS_CERT"},
          std::pair{&base.tls_key_file, "LMX_TLS_KEY"}}) {
        const char* v = std::getenv(name);
        if (field->empty() && v && *v) *field = v;
    }
    if (base.token.empty() && base.token_file.empty()) {
        for (const auto& l : layers) {
            if (!l.token_file) continue;
            base.token_file = *l.token_file;
            break;
        }
    }
    return base;
}

}  // namespace lmx
