#pragma once

// Child processes and scratch directories for tests that start real servers.

#include <chrono>
#include <string>
#include <vector>

namespace lmx::test {

// A fresh empty directory under `base` (default: $TMPDIR, or /tmp), removed with everything in it
// on destruction.
class temp_dir {
public:
    explicit temp_dir(const std::string& base = {});
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
};

// Starts `args` (args[0] a path) with stdout and stderr appended to `out_path` and `env` added to its
// environment; the process is killed when the thread that started it ends.
int spawn(const std::vector<std::string>& args, const std::string& out_path, const std::vector<std::string>& env = {},
          unsigned nofile = 0);
// Waits up to `wait` for process `pid`; returns its exit status (128+N when killed by signal N), or -1.
int wait_for(int pid, std::chrono::milliseconds wait);

}  // namespace lmx::test
