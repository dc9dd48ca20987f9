#pragma once

#include <map>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace lmx::app {

// A command's settings as a JSON object: every long option is a key (its name without the
// dashes), a flag takes true or false, a repeatable option a list, and null (or an empty list)
// leaves an option at its default. `config_key_skipped` names the options that are not settings (help, the config
// options themselves).
bool config_key_skipped(const std::string& key);

// Applies the JSON file at `path` to the options of `cmd` that the command line did not set: the
// command line wins. Returns "" or an error naming the file and, where it is about one, the key.
std::string apply_config_file(CLI::App& cmd, const std::string& path);

// The effective settings of `cmd` (command line over file over default) as a JSON object in the
// same form, one key a line, that `apply_config_file` reads back. `list_defaults`: what a
// repeatable option that was not given stands for (CLI11 keeps no default for those).
std::string effective_config(const CLI::App& cmd,
                             const std::map<std::string, std::vector<std::string>>& list_defaults = {});

}  // namespace lmx::app
